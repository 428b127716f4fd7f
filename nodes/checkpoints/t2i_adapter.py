"""T2I-Adapter weights: TencentARC's original layout ↔ diffusers' T2IAdapter, and loading either offline.

Three architectures, all diffusers' ``T2IAdapter`` with another ``adapter_type``:

- ``full_adapter`` (the SD 1.x releases, ``t2iadapter_*_sd14v1`` / ``_sd15v2``): the control image pixel-unshuffled
  by 8, a convolution in, then one level per UNet block of ``num_res_blocks`` residual blocks, each level after the
  first halving the picture. The original file numbers the residual blocks in one list (``body.{level · blocks +
  block}``); a level that widens the features starts with a 1×1 ``in_conv``.
- ``full_adapter_xl`` (SDXL, ``t2i-adapter_*_xl``): the same weights, the picture unshuffled by 16 and halved once
  (average pooling has no weights, so only the unshuffle factor tells the two apart: 16 is SDXL's).
- ``light_adapter`` (the colour adapter): per level a 1×1 convolution to a quarter of the width, residual blocks,
  a 1×1 convolution out; no convolution in.

Files come in the original layout or with diffusers' keys (``adapter.*``, the ``diffusion_pytorch_model.safetensors``
of a diffusers folder saved on its own, as ComfyUI users keep them). Every size is read from the weights over the
shipped config of the architecture (``nodes/models/configs/t2i-adapter-*``); a tensor the architecture does not
have, or one it needs that the file lacks, is an error."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from .build import cast, from_folder, load_exact
from .common import CONFIGS, CheckpointError, indices, read_json, shape
from .keymap import Rule, rename_all
from .reading import read_state_dict

# adapter_type → shipped config folder (nodes/models/configs/<folder>/config.json): diffusers' T2IAdapter configs
ADAPTER_CONFIGS = {"full_adapter": "t2i-adapter-sd1", "full_adapter_xl": "t2i-adapter-sdxl",
                   "light_adapter": "t2i-adapter-light"}
XL_UNSHUFFLE = 16  # SDXL's adapters unshuffle by 16, SD 1.x's by 8
DIFFUSERS_PREFIX = "adapter."


def adapter_rules(config: dict[str, Any]) -> list[Rule]:
    """diffusers ↔ original names for a T2IAdapter ``config``. A level's ``in_conv`` rule comes before its first
    residual block's, whose original prefix it shares."""
    levels = len(config["channels"]) + (1 if config["adapter_type"] == "light_adapter" else 0)
    blocks = config["num_res_blocks"]
    if config["adapter_type"] == "light_adapter":
        rules = [(f"adapter.body.{i}.resnets.", f"body.{i}.body.", {}) for i in range(levels)]
    else:
        rules = [(f"adapter.body.{i}.in_conv.", f"body.{i * blocks}.in_conv.", {}) for i in range(levels)]
        rules += [(f"adapter.body.{i}.resnets.{j}.", f"body.{i * blocks + j}.", {})
                  for i in range(levels) for j in range(blocks)]
    return rules + [(DIFFUSERS_PREFIX, "", {})]


def adapter_to_original(weights: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    return rename_all(weights, adapter_rules(config), to_original=True)


def unshuffle_factor(in_channels: int, what: str) -> tuple[int, int]:
    """(image channels, unshuffle factor) from the width of the unshuffled input: channels · factor² with an RGB
    (3) or a grey (1) control image."""
    for channels in (3, 1):
        factor = math.isqrt(in_channels // channels)
        if in_channels % channels == 0 and factor * factor * channels == in_channels:
            return channels, factor
    raise CheckpointError(f"{what} takes {in_channels} input channels: not an unshuffled RGB or grey image (3 or 1 × factor²)")


def original_config(weights: dict[str, torch.Tensor]) -> dict[str, Any]:
    """What renaming original keys needs: the architecture, residual blocks per level, the level count."""
    levels = indices(weights, "body.")
    if not levels:
        raise CheckpointError("no adapter body (body.*): not a T2I-Adapter")
    if "conv_in.weight" not in weights:  # light: body.{level}.body.{block}
        blocks = len(indices(weights, "body.0.body."))
        return {"adapter_type": "light_adapter", "num_res_blocks": blocks, "channels": [0] * (len(levels) - 1)}
    widening = [i for i in levels if f"body.{i}.in_conv.weight" in weights]
    blocks = widening[0] if widening else read_json(CONFIGS / ADAPTER_CONFIGS["full_adapter"] / "config.json")["num_res_blocks"]
    if blocks == 0 or len(levels) % blocks:
        raise CheckpointError(f"the adapter's {len(levels)} residual blocks (body.*) do not split into levels of {blocks}")
    return {"adapter_type": "full_adapter", "num_res_blocks": blocks, "channels": [0] * (len(levels) // blocks)}


def derive_adapter_config(weights: dict[str, torch.Tensor]) -> dict[str, Any]:
    """T2IAdapter sizes from diffusers-layout weights: architecture, image channels, unshuffle factor, each level's
    width and residual block count."""
    levels = indices(weights, "adapter.body.")
    if not levels:
        raise CheckpointError("no adapter body (adapter.body.*): not a T2I-Adapter")
    blocks = len(indices(weights, "adapter.body.0.resnets."))
    if "adapter.conv_in.weight" in weights:
        channels, factor = unshuffle_factor(shape(weights, "adapter.conv_in.weight", "T2I-Adapter")[1], "the adapter")
        widths = [shape(weights, f"adapter.body.{i}.resnets.0.block1.weight", "T2I-Adapter")[0] for i in levels]
        kind = "full_adapter_xl" if factor == XL_UNSHUFFLE else "full_adapter"
    else:
        channels, factor = unshuffle_factor(shape(weights, "adapter.body.0.in_conv.weight", "T2I-Adapter")[1], "the adapter")
        outputs = [shape(weights, f"adapter.body.{i}.out_conv.weight", "T2I-Adapter")[0] for i in levels]
        if len(outputs) < 2 or outputs[-1] != outputs[-2]:
            raise CheckpointError(f"a light adapter's last level repeats the width of the one before; the widths are {outputs}")
        widths, kind = outputs[:-1], "light_adapter"
    return {"adapter_type": kind, "in_channels": channels, "downscale_factor": factor, "channels": widths,
            "num_res_blocks": blocks}


def adapter_weights(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A file's tensors with diffusers' names: as they are when the keys are diffusers' (``adapter.*``), renamed
    from the original layout otherwise."""
    if any(k.startswith(DIFFUSERS_PREFIX) for k in state_dict):
        return state_dict
    if "input_hint_block.0.weight" in state_dict or any(k.startswith("control_model.") for k in state_dict):
        raise CheckpointError("this is a ControlNet, not a T2I-Adapter; load it with LoadControlNet")
    if any(k.startswith("model.diffusion_model.") for k in state_dict):
        raise CheckpointError("this is a Stable Diffusion checkpoint, not a T2I-Adapter; load it with LoadCheckpoint")
    return rename_all(state_dict, adapter_rules(original_config(state_dict)), to_original=False)


def adapter_config(weights: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The full config: the shipped one of the architecture, every size from the weights."""
    derived = derive_adapter_config(weights)
    base = read_json(CONFIGS / ADAPTER_CONFIGS[derived["adapter_type"]] / "config.json")
    return {**base, **derived}


def load_adapter_file(path: Path, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """A T2I-Adapter single file (original layout or diffusers keys), offline: a T2IAdapter."""
    weights = adapter_weights(read_state_dict(path)[0])
    config = adapter_config(weights)
    from accelerate import init_empty_weights
    from diffusers import T2IAdapter

    with init_empty_weights():
        module = T2IAdapter.from_config(config)
    return cast(load_exact(module, weights, "T2I-Adapter"), dtype)


def is_adapter_folder(path: Path) -> bool:
    """A diffusers T2IAdapter folder: a config.json naming the class."""
    config = Path(path) / "config.json"
    try:
        return config.is_file() and read_json(config).get("_class_name") == "T2IAdapter"
    except (ValueError, OSError, AttributeError):
        return False


def load_adapter_folder(folder: Path, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """A diffusers T2IAdapter folder (config.json + weights)."""
    from diffusers import T2IAdapter

    return from_folder(T2IAdapter, folder, dtype, "T2I-Adapter")
