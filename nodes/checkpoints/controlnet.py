"""ControlNet weights: the original layout (lllyasviel's files: ``control_model.*``, or the same keys bare) ↔
diffusers' ControlNetModel, and loading either offline.

A ControlNet is a trainable copy of its UNet's encoder half (time embedding, input blocks, middle block), renamed by
the UNet's own table (``unet.py``), plus three parts of its own, renamed by the table here: the hint encoder that
turns the control image into a latent-sized feature (``input_hint_block``), one zero convolution per input block
(``zero_convs``) and one after the middle block (``middle_block_out``). Which shipped config a file starts from is
data too (:data:`CONTROLNET_CONFIGS`, by the family its cross-attention width names); every size is read from the
weights."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .build import cast, checked, load_exact
from .common import CONFIGS, CheckpointError, indices, read_json, shape, take_prefix
from .configs import size_defaults
from .families import family_of
from .keymap import Rule, rename_all
from .reading import read_state_dict
from .unet import cross_attention_widths, derive_encoder_config, unet_rules

CONTROL_PREFIX = "control_model."
# family → shipped config folder (nodes/models/configs/<folder>/config.json): diffusers' ControlNetModel configs
CONTROLNET_CONFIGS = {"sd1": "controlnet-sd1", "sd2": "controlnet-sd2"}
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
    hint = [shape(weights, f"input_hint_block.{i}.weight", "ControlNet") for i in indices(weights, "input_hint_block.")]
    if len(hint) < 2 or len(hint) % 2:
        raise CheckpointError(f"the ControlNet's hint encoder (input_hint_block.*) has {len(hint)} convolutions; expected an even number, at least 2")
    config["conditioning_channels"] = hint[0][1]
    config["conditioning_embedding_out_channels"] = [hint[0][0]] + [hint[i][0] for i in range(2, len(hint) - 1, 2)]
    return config


def controlnet_weights(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ControlNet's own tensors of a file: under ``control_model.`` when the file has that prefix (the first
    ControlNet releases also hold the SD model they were trained with, which is not part of the ControlNet), else
    the whole file (the later releases' bare keys)."""
    if any(k.startswith(CONTROL_PREFIX) for k in state_dict):
        return take_prefix(state_dict, CONTROL_PREFIX)
    if "controlnet_cond_embedding.conv_in.weight" in state_dict:
        raise CheckpointError("the keys are in diffusers layout; keep such weights in a folder with their config.json")
    if "input_hint_block.0.weight" not in state_dict:
        if any(k.startswith("model.diffusion_model.") for k in state_dict):
            raise CheckpointError("this is a Stable Diffusion checkpoint, not a ControlNet; load it with LoadCheckpoint")
        raise CheckpointError("no hint encoder (input_hint_block.*): not a ControlNet")
    return state_dict


def controlnet_family(cross_attention_dim: int) -> str:
    return family_of(cross_attention_dim, None)


def controlnet_config_folder(family: str) -> Path:
    if family not in CONTROLNET_CONFIGS:
        raise CheckpointError(f"no ControlNet config for the {family} family; graphflow loads ControlNets for {', '.join(CONTROLNET_CONFIGS)}")
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
    """A ControlNet single file in the original layout, offline: (ControlNetModel, family)."""
    weights = controlnet_weights(read_state_dict(path)[0])
    derived = derive_controlnet_config(weights)
    widths = cross_attention_widths(weights)
    if not widths:
        raise CheckpointError("the ControlNet has no cross-attention layers")
    family = controlnet_family(widths[0])
    base = read_json(controlnet_config_folder(family) / "config.json")
    config = {**base, **size_defaults("unet", base, derived), **derived, **sidecar_options(path)}
    from accelerate import init_empty_weights
    from diffusers import ControlNetModel

    with init_empty_weights():
        module = ControlNetModel.from_config(config)
    return cast(load_exact(module, controlnet_from_original(weights, config), "ControlNet"), dtype), family


def load_controlnet_folder(folder: Path, dtype: torch.dtype | None = None) -> tuple[torch.nn.Module, str]:
    """A diffusers ControlNetModel folder (config.json + weights): (ControlNetModel, family)."""
    from diffusers import ControlNetModel

    try:
        result = ControlNetModel.from_pretrained(folder, torch_dtype=dtype, local_files_only=True, output_loading_info=True)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"cannot load the ControlNet folder {Path(folder).name}: {error}") from None
    module = checked(result, "ControlNet")
    return module, controlnet_family(int(module.config.cross_attention_dim))
