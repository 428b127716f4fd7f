"""The VAE in the original CompVis layout (``first_stage_model.*``, or bare in a VAE file), shared by every family:
``encoder.down.{level}.block.{j}`` ↔ diffusers' ``encoder.down_blocks.{level}.resnets.{j}``."""
from __future__ import annotations

import re
from typing import Any

import torch

from .common import CheckpointError, indices, shape
from .keymap import Rule, rename

VAE_PREFIX = "first_stage_model."
VAE_RESNET = {"conv_shortcut.": "nin_shortcut."}
VAE_ATTENTION = {"group_norm.": "norm.", "to_q.": "q.", "to_k.": "k.", "to_v.": "v.", "to_out.0.": "proj_out."}
# The original attention uses 1x1 convolutions where diffusers uses Linear layers: same numbers, 4-D.
VAE_ATTENTION_MATRIX = re.compile(r"(en|de)coder\.mid\.attn_1\.(q|k|v|proj_out)\.weight")
VAE_PARTS = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")


def vae_rules(config: dict[str, Any]) -> list[Rule]:
    levels, per_level = len(config["block_out_channels"]), config["layers_per_block"]
    rules: list[Rule] = []
    for part in ("encoder", "decoder"):
        rules += [
            (f"{part}.conv_norm_out.", f"{part}.norm_out.", {}),
            (f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1.", VAE_RESNET),
            (f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2.", VAE_RESNET),
            (f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1.", VAE_ATTENTION),
        ]
    for level in range(levels):
        up = levels - 1 - level  # the original decoder numbers its levels from the highest resolution
        rules += [(f"encoder.down_blocks.{level}.resnets.{j}.", f"encoder.down.{level}.block.{j}.", VAE_RESNET) for j in range(per_level)]
        rules += [(f"decoder.up_blocks.{level}.resnets.{j}.", f"decoder.up.{up}.block.{j}.", VAE_RESNET) for j in range(per_level + 1)]
        rules.append((f"encoder.down_blocks.{level}.downsamplers.0.conv.", f"encoder.down.{level}.downsample.conv.", {}))
        rules.append((f"decoder.up_blocks.{level}.upsamplers.0.conv.", f"decoder.up.{up}.upsample.conv.", {}))
    return rules


def vae_to_original(weights: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    rules, out = vae_rules(config), {}
    for key, value in weights.items():
        key = rename(key, rules, True)
        out[key] = value[:, :, None, None] if VAE_ATTENTION_MATRIX.fullmatch(key) and value.dim() == 2 else value
    return out


def vae_from_original(weights: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    rules, out = vae_rules(config), {}
    for key, value in weights.items():
        if key.startswith(("loss.", "model_ema.")):  # training-only parts of some VAE files
            continue
        matrix = VAE_ATTENTION_MATRIX.fullmatch(key) and value.dim() == 4
        out[rename(key, rules, False)] = value[:, :, 0, 0] if matrix else value
    return out


def derive_vae_config(vae: dict[str, torch.Tensor]) -> dict[str, Any]:
    """VAE sizes from original-layout VAE weights (``encoder.down.{level}.block.{j}``)."""
    levels = indices(vae, "encoder.down.")
    if not levels:
        raise CheckpointError("VAE weights (encoder.down.*) are missing")
    return {
        "in_channels": shape(vae, "encoder.conv_in.weight", "VAE")[1],
        "out_channels": shape(vae, "decoder.conv_out.weight", "VAE")[0],
        "latent_channels": shape(vae, "decoder.conv_in.weight", "VAE")[1],
        "block_out_channels": [shape(vae, f"encoder.down.{i}.block.0.conv1.weight", "VAE")[0] for i in levels],
        "layers_per_block": len(indices(vae, "encoder.down.0.block.")),
        "down_block_types": ["DownEncoderBlock2D"] * len(levels),
        "up_block_types": ["UpDecoderBlock2D"] * len(levels),
    }
