"""Modules from configs and weights, strictly: a weight the architecture needs but the weights lack, or one the
weights have that the architecture does not use, is an error — never a silently random tensor."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .common import CheckpointError, list_keys

Weights = dict[str, "torch.Tensor"]  # torch is not touched at import (see nodes/__init__.py)


def load_exact(module: torch.nn.Module, weights: Weights, component: str) -> torch.nn.Module:
    """Put ``weights`` into a module built on the meta device, refusing any missing, unexpected or misshapen
    tensor. ``assign=True`` makes the file's tensors the parameters: no copy is made."""
    expected = set(module.state_dict())
    missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or unexpected:
        problems = ([f"missing {list_keys(missing)}"] if missing else []) + ([f"unexpected {list_keys(unexpected)}"] if unexpected else [])
        raise CheckpointError(f"{component} weights do not match its architecture: " + "; ".join(problems))
    try:
        module.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as error:
        detail = " ".join(str(error).split()).split(": ", 1)[-1]  # torch's multi-line report, on one line
        raise CheckpointError(f"{component} weights do not match its architecture: {detail}") from None
    return module.eval()


def unet_from_weights(config: dict[str, Any], weights: Weights) -> torch.nn.Module:
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(config)
    return load_exact(unet, weights, "UNet")


def vae_from_weights(config: dict[str, Any], weights: Weights) -> torch.nn.Module:
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL

    with init_empty_weights():
        vae = AutoencoderKL.from_config(config)
    return load_exact(vae, weights, "VAE")


def text_encoder_from_weights(config: dict[str, Any], weights: Weights, model_class: str = "CLIPTextModel",
                              component: str = "text encoder") -> torch.nn.Module:
    """A transformers CLIP text model (``CLIPTextModelWithProjection`` for SDXL's OpenCLIP bigG)."""
    import transformers
    from accelerate import init_empty_weights

    with init_empty_weights():  # buffers (position_ids) stay real: only parameters are left empty
        model = getattr(transformers, model_class)(transformers.CLIPTextConfig.from_dict(config))
    return load_exact(model, weights, component)


def checked(result: tuple[Any, dict[str, list]], component: str) -> Any:
    """``from_pretrained(..., output_loading_info=True)`` result → the model, or an error if any weight was
    missing or unexpected (both libraries would otherwise warn and continue with random weights)."""
    model, info = result
    problems = {kind: list(info.get(kind) or []) for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if any(problems.values()):
        detail = "; ".join(f"{kind.replace('_', ' ')}: {list_keys([str(k) for k in keys])}" for kind, keys in problems.items() if keys)
        raise CheckpointError(f"{component} weights do not match its config: {detail}")
    return model.eval()


def from_folder(model_class, folder: Path, dtype: torch.dtype | None, component: str) -> Any:
    """A diffusers model folder (config.json + weights) read offline and strictly (:func:`checked`); a folder
    that cannot be read is one CheckpointError naming the ``component`` and the folder."""
    try:
        result = model_class.from_pretrained(folder, torch_dtype=dtype, local_files_only=True, output_loading_info=True)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"cannot load the {component} folder {Path(folder).name}: {error}") from None
    return checked(result, component)


def cast(module: torch.nn.Module, dtype: torch.dtype | None) -> torch.nn.Module:
    """The module in ``dtype``; untouched when its weights already are (a single file is cast as it is read),
    since diffusers' ``to()`` warns about "modules that should be kept in float32" on every call, even a no-op."""
    tensors = [t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
    return module if dtype is None or all(t.dtype == dtype for t in tensors) else module.to(dtype=dtype)
