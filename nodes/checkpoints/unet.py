"""The UNet in the original CompVis layout (``model.diffusion_model.*``), shared by SD 1.x, 2.x and SDXL:
``input_blocks`` / ``middle_block`` / ``output_blocks`` ↔ diffusers' ``down_blocks`` / ``mid_block`` / ``up_blocks``.

The renaming is a table built from the block structure; the structure itself is read from the weights."""
from __future__ import annotations

import re
from typing import Any

import torch

from .common import CheckpointError, indices, shape
from .keymap import Rule, rename_all

UNET_PREFIX = "model.diffusion_model."
INPAINTING_IN_CHANNELS = 9  # latents + mask + masked-image latents: the inpainting variants of every family

UNET_RESNET = {"norm1.": "in_layers.0.", "conv1.": "in_layers.2.", "time_emb_proj.": "emb_layers.1.",
               "norm2.": "out_layers.0.", "conv2.": "out_layers.3.", "conv_shortcut.": "skip_connection."}


def unet_rules(config: dict[str, Any]) -> list[Rule]:
    per_level, levels = config["layers_per_block"], len(config["block_out_channels"])
    rules: list[Rule] = [
        ("time_embedding.linear_1.", "time_embed.0.", {}), ("time_embedding.linear_2.", "time_embed.2.", {}),
        ("conv_in.", "input_blocks.0.0.", {}), ("conv_norm_out.", "out.0.", {}), ("conv_out.", "out.2.", {}),
        ("mid_block.resnets.0.", "middle_block.0.", UNET_RESNET), ("mid_block.attentions.0.", "middle_block.1.", {}),
        ("mid_block.resnets.1.", "middle_block.2.", UNET_RESNET),
        # SDXL's added conditioning: pooled text and size ids, embedded
        ("add_embedding.linear_1.", "label_emb.0.0.", {}), ("add_embedding.linear_2.", "label_emb.0.2.", {}),
    ]
    for level in range(levels):
        down_attention = config["down_block_types"][level].startswith("CrossAttn")
        for j in range(per_level):
            index = 1 + level * (per_level + 1) + j
            rules.append((f"down_blocks.{level}.resnets.{j}.", f"input_blocks.{index}.0.", UNET_RESNET))
            if down_attention:
                rules.append((f"down_blocks.{level}.attentions.{j}.", f"input_blocks.{index}.1.", {}))
        if level < levels - 1:
            index = 1 + level * (per_level + 1) + per_level
            rules.append((f"down_blocks.{level}.downsamplers.0.conv.", f"input_blocks.{index}.0.op.", {}))
        up_attention = config["up_block_types"][level].startswith("CrossAttn")
        for j in range(per_level + 1):
            index = level * (per_level + 1) + j
            rules.append((f"up_blocks.{level}.resnets.{j}.", f"output_blocks.{index}.0.", UNET_RESNET))
            if up_attention:
                rules.append((f"up_blocks.{level}.attentions.{j}.", f"output_blocks.{index}.1.", {}))
        if level < levels - 1:  # the upsampler follows the attention when the level has one
            index = level * (per_level + 1) + per_level
            rules.append((f"up_blocks.{level}.upsamplers.0.conv.", f"output_blocks.{index}.{2 if up_attention else 1}.conv.", {}))
    return rules


def unet_to_original(weights: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    return rename_all(weights, unet_rules(config), to_original=True)


def unet_from_original(weights: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    return rename_all(weights, unet_rules(config), to_original=False)


def cross_attention_widths(unet: dict[str, torch.Tensor]) -> list[int]:
    """The text-feature width of every cross-attention layer (original or diffusers names: both end alike)."""
    return [tuple(v.shape)[1] for k, v in unet.items() if k.endswith("attn2.to_k.weight")]


def derive_unet_config(unet: dict[str, torch.Tensor]) -> dict[str, Any]:
    """UNet sizes from original-layout UNet weights: the encoder half's (:func:`derive_encoder_config`), then
    the output channels and which up blocks attend."""
    config = derive_encoder_config(unet)
    per_level, levels = config["layers_per_block"], len(config["block_out_channels"])
    up_attention = [any(k.startswith(f"output_blocks.{level * (per_level + 1)}.1.") for k in unet) for level in range(levels)]
    return {**config, "out_channels": shape(unet, "out.2.weight", "UNet")[0],
            "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in up_attention]}


def derive_encoder_config(unet: dict[str, torch.Tensor], component: str = "UNet") -> dict[str, Any]:
    """The sizes of a UNet's encoder half (time embedding, input blocks, middle block) from original-layout
    weights — all a ControlNet, a copy of that half, has. Input blocks are conv_in, then per level
    ``layers_per_block`` (resnet[, attention]) blocks and a downsampler (none after the last level)."""
    n_input = len(indices(unet, "input_blocks."))
    levels = 1 + sum(1 for k in unet if re.fullmatch(r"input_blocks\.\d+\.0\.op\.weight", k))
    per_level = n_input // levels - 1
    if per_level < 1 or n_input != levels * (per_level + 1):
        raise CheckpointError(f"{component} input blocks ({n_input}) do not form {levels} levels of equal depth")
    first = [1 + level * (per_level + 1) for level in range(levels)]
    down_attention = [any(k.startswith(f"input_blocks.{i}.1.") for k in unet) for i in first]
    config = {
        "in_channels": shape(unet, "input_blocks.0.0.weight", component)[1],
        "block_out_channels": [shape(unet, f"input_blocks.{i}.0.out_layers.3.weight", component)[0] for i in first],
        "layers_per_block": per_level,
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in down_attention],
    }
    widths = cross_attention_widths(unet)
    if widths:
        config["cross_attention_dim"] = widths[0]
    # Transformer blocks per attention: SD 1.x / 2.x one everywhere (no entry: diffusers' default), SDXL several,
    # distilled SDXL ControlNets ("small", "mid") none in some levels. Levels without attention ignore their entry;
    # diffusers' middle block reads the last one.
    depths = [len(indices(unet, f"input_blocks.{i}.1.transformer_blocks.")) if a else None
              for i, a in zip(first, down_attention)]
    middle = len(indices(unet, "middle_block.1.transformer_blocks."))
    attending = {d for d in depths if d is not None} | {middle}
    if attending != {1}:
        config["transformer_layers_per_block"] = middle if attending == {middle} else \
            [1 if d is None else d for d in depths[:-1]] + [middle]
    if "label_emb.0.0.weight" in unet:
        config["addition_embed_type"] = "text_time"
        config["projection_class_embeddings_input_dim"] = shape(unet, "label_emb.0.0.weight", "UNet")[1]
    proj_in = next((v for k, v in unet.items() if k.endswith("proj_in.weight")), None)
    if proj_in is not None:
        config["use_linear_projection"] = proj_in.dim() == 2  # SD2 uses Linear, SD1 a 1x1 conv
    return config
