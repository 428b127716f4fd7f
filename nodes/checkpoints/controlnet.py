"""ControlNet weights: the original layout (lllyasviel's files: ``control_model.*``, or the same keys bare) ↔
diffusers' ControlNetModel, and loading either offline: a folder, an original-layout file, or a single file with
diffusers' keys and no config (how most SDXL ControlNets ship: ``diffusion_pytorch_model.safetensors``).

A ControlNet is a trainable copy of its UNet's encoder half (time embedding, input blocks, middle block), renamed by
the UNet's own table (``unet.py``), plus three parts of its own, renamed by the table here: the hint encoder that
turns the control image into a latent-sized feature (``input_hint_block``), one zero convolution per input block
(``zero_convs``) and one after the middle block (``middle_block_out``). Which shipped config a file starts from is
data too (:data:`CONTROLNET_CONFIGS`, by the family its cross-attention width names); every size is read from the
weights. A diffusers-key file is renamed to the original layout first (the table needs only the block structure,
which the diffusers names show), so both kinds of file are read and checked by the same code.

SDXL ControlNets carry SDXL's added embedding (``label_emb`` / ``add_embedding``: pooled text and size ids); the
width of each embedded size id is not in the weights: 256 at full size (the shipped config), else from the config
graphflow stores in the files it writes."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .build import cast, from_folder, load_exact
from .common import CONFIGS, METADATA_PREFIX, CheckpointError, indices, read_json, shape, take_prefix
from .configs import size_defaults, stored_config
from .families import SDXL, SDXL_REFINER, family_named, family_of
from .keymap import Rule, rename_all
from .reading import read_state_dict
from .unet import cross_attention_widths, derive_encoder_config, unet_rules

CONTROL_PREFIX = "control_model."
# family → shipped config folder (nodes/models/configs/<folder>/config.json): diffusers' ControlNetModel configs
CONTROLNET_CONFIGS = {"sd1": "controlnet-sd1", "sd2": "controlnet-sd2", "sdxl": "controlnet-sdxl"}
HINT_PREFIX = "controlnet_cond_embedding."  # the diffusers name of the hint encoder
# What the UNet has and its ControlNet copy does not: the decoder half.
DECODER_PREFIXES = ("up_blocks.", "conv_norm_out.", "conv_out.")


def hint_convolutions(config: dict[str, Any]) -> int:
    """Convolutions in the hint encoder: one in, two per downsampling stage, one out to the UNet's width."""
    return 2 + 2 * (len(config["conditioning_embedding_out_channels"]) - 1)


def controlnet_rules(config: dict[str, Any]) -> list[Rule]:
    """diffusers ↔ original names. The hint encoder's convolutions sit at the even places of an nn.Sequential
    (SiLU between them); each input block's zero convolution is ``zero_convs.{i}.0``."""
    as_unet = {**config, "up_block_types": config["down_block_types"]}  # up blocks only to build the table; dropped
    rules = [rule for rule in unet_rules(as_unet) if not rule[0].startswith(DECODER_PREFIXES)]
    convolutions = hint_convolutions(config)
    rules.append(("controlnet_cond_embedding.conv_in.", "input_hint_block.0.", {}))
    rules += [(f"controlnet_cond_embedding.blocks.{j}.", f"input_hint_block.{2 * (j + 1)}.", {}) for j in range(convolutions - 2)]
    rules.append(("controlnet_cond_embedding.conv_out.", f"input_hint_block.{2 * (convolutions - 1)}.", {}))
    levels, per_level = len(config["block_out_channels"]), config["layers_per_block"]
    rules += [(f"controlnet_down_blocks.{i}.", f"zero_convs.{i}.0.", {}) for i in range(levels * (per_level + 1))]
    rules.append(("controlnet_mid_block.", "middle_block_out.0.", {}))
    return rules


def controlnet_from_original(weights: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    return rename_all(weights, controlnet_rules(config), to_original=False)


def controlnet_to_original(weights: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    return rename_all(weights, controlnet_rules(config), to_original=True)


def derive_controlnet_config(weights: dict[str, torch.Tensor]) -> dict[str, Any]:
    """ControlNet sizes from original-layout weights (prefix removed): the encoder half's, and the hint encoder's
    channels (each downsampling stage's second convolution changes the width)."""
    config = derive_encoder_config(weights, "ControlNet")
    config.setdefault("transformer_layers_per_block", 1)  # one everywhere, whatever the family's shipped config says
    hint = [shape(weights, f"input_hint_block.{i}.weight", "ControlNet") for i in indices(weights, "input_hint_block.")]
    if len(hint) < 2 or len(hint) % 2:
        raise CheckpointError(f"the ControlNet's hint encoder (input_hint_block.*) has {len(hint)} convolutions; expected an even number, at least 2")
    config["conditioning_channels"] = hint[0][1]
    config["conditioning_embedding_out_channels"] = [hint[0][0]] + [hint[i][0] for i in range(2, len(hint) - 1, 2)]
    return config


def diffusers_layout(weights: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The block structure of diffusers-key ControlNet weights, all :func:`controlnet_rules` needs to rename them:
    levels, resnets per level, which levels attend, the hint encoder's convolutions (widths: placeholders)."""
    levels = indices(weights, "down_blocks.")
    hint_blocks = len(indices(weights, HINT_PREFIX + "blocks."))
    return {"block_out_channels": [0] * len(levels), "layers_per_block": len(indices(weights, "down_blocks.0.resnets.")),
            "down_block_types": ["CrossAttnDownBlock2D" if any(k.startswith(f"down_blocks.{i}.attentions.") for k in weights)
                                 else "DownBlock2D" for i in levels],
            "conditioning_embedding_out_channels": [0] * (hint_blocks // 2 + 1)}


def controlnet_weights(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ControlNet's own tensors of a file, in the original layout: under ``control_model.`` when the file has
    that prefix (the first ControlNet releases also hold the SD model they were trained with, which is not part of
    the ControlNet), else the whole file (the later releases' bare keys, or diffusers' keys, renamed)."""
    if any(k.startswith(CONTROL_PREFIX) for k in state_dict):
        return take_prefix(state_dict, CONTROL_PREFIX)
    if "lora_controlnet" in state_dict:  # the marker ComfyUI reads them by
        raise CheckpointError("this is a Control-LoRA (Stability AI's control-lora-*: low-rank differences to an SDXL "
                              "UNet), which graphflow does not load; use a full ControlNet")
    if HINT_PREFIX + "conv_in.weight" in state_dict:
        return controlnet_to_original(state_dict, diffusers_layout(state_dict))
    if "input_hint_block.0.weight" not in state_dict:
        if any(k.startswith("model.diffusion_model.") for k in state_dict):
            raise CheckpointError("this is a Stable Diffusion checkpoint, not a ControlNet; load it with LoadCheckpoint")
        raise CheckpointError("no hint encoder (input_hint_block.* / controlnet_cond_embedding.*): not a ControlNet")
    return state_dict


def controlnet_family(cross_attention_dim: int, added_conditioning: bool) -> str:
    """The family a ControlNet is for: one with SDXL's added embedding is SDXL (the refiner when 1280 wide: no
    ControlNets are published for it), others by their text width as a UNet's."""
    if added_conditioning:
        return "sdxl-refiner" if cross_attention_dim == SDXL_REFINER.cross_attention_dim else SDXL.name
    return family_of(cross_attention_dim, None)


def controlnet_config_folder(family: str) -> Path:
    if family not in CONTROLNET_CONFIGS:
        raise CheckpointError(f"no ControlNet config for the {family_named(family).title} family; graphflow loads "
                              f"ControlNets for {', '.join(family_named(f).title for f in CONTROLNET_CONFIGS)}")
    return CONFIGS / CONTROLNET_CONFIGS[family]


def sidecar_options(path: Path) -> dict[str, Any]:
    """What the weights cannot show, from a sidecar ``<name>.yaml`` (the release's original config): whether the
    ControlNet pools its residuals over the picture (``global_average_pooling``, the shuffle model)."""
    sidecar = Path(path).with_suffix(".yaml")
    if not sidecar.is_file():
        return {}
    import yaml

    try:
        params = yaml.safe_load(sidecar.read_text())["model"]["params"]["control_stage_config"]["params"]
    except (yaml.YAMLError, KeyError, TypeError) as error:
        raise CheckpointError(f"{sidecar.name} is not a ControlNet config (model.params.control_stage_config.params): {error}") from None
    return {"global_pool_conditions": bool(params.get("global_average_pooling", False))}


def load_controlnet_file(path: Path, dtype: torch.dtype | None = None) -> tuple[torch.nn.Module, str]:
    """A ControlNet single file (original layout, or diffusers' keys), offline: (ControlNetModel, family)."""
    state_dict, metadata = read_state_dict(path)
    weights = controlnet_weights(state_dict)
    derived = derive_controlnet_config(weights)
    widths = cross_attention_widths(weights)
    if not widths:
        raise CheckpointError("the ControlNet has no cross-attention layers")
    family = controlnet_family(widths[0], "addition_embed_type" in derived)
    base = read_json(controlnet_config_folder(family) / "config.json")
    config = {**base, **size_defaults("unet", base, derived), **stored_config(metadata, "controlnet"), **derived,
              **sidecar_options(path)}
    if config.get("addition_embed_type") == "text_time":
        check_size_id_width(config, family)
    from accelerate import init_empty_weights
    from diffusers import ControlNetModel

    with init_empty_weights():
        module = ControlNetModel.from_config(config)
    return cast(load_exact(module, controlnet_from_original(weights, config), "ControlNet"), dtype), family


def check_size_id_width(config: dict[str, Any], family: str) -> None:
    """That the added embedding's input (pooled text + the family's size ids, each ``addition_time_embed_dim`` wide)
    can be made with the size-id width assumed; a wrong width would fail only when sampling."""
    total, width, ids = (int(config["projection_class_embeddings_input_dim"]), int(config["addition_time_embed_dim"]),
                         family_named(family).size_ids)
    if total <= ids * width:
        raise CheckpointError(f"the ControlNet's added embedding takes {total} values, fewer than {ids} size ids "
                              f"{width} wide: the width of its size ids cannot be told (store the config in the file's "
                              f"metadata as {METADATA_PREFIX}controlnet_config)")


def load_controlnet_folder(folder: Path, dtype: torch.dtype | None = None) -> tuple[torch.nn.Module, str]:
    """A diffusers ControlNetModel folder (config.json + weights): (ControlNetModel, family)."""
    from diffusers import ControlNetModel

    module = from_folder(ControlNetModel, folder, dtype, "ControlNet")
    config = module.config
    return module, controlnet_family(int(config.cross_attention_dim), config.addition_embed_type == "text_time")
