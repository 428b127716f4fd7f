"""Writing a model back as one original-layout single file: the inverse of the reader, from the same tables."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from graphflow.paths import atomic_save

from .common import METADATA_PREFIX
from .families import family_named, text_subfolders
from .unet import UNET_PREFIX, unet_to_original
from .vae import VAE_PREFIX, vae_to_original


def public_config(config: Any) -> dict[str, Any]:
    """A module config without the bookkeeping keys (class name, library versions)."""
    return {k: v for k, v in dict(config).items() if not k.startswith("_") and k not in ("transformers_version", "dtype", "torch_dtype")}


def original_state_dict(model, clip, vae) -> dict[str, torch.Tensor]:
    """The three parts in the original single-file layout (tensors still where they live)."""
    unet_config = dict(model.unet.config)
    weights = {UNET_PREFIX + k: v for k, v in unet_to_original(model.unet.state_dict(), unet_config).items()}
    weights.update({VAE_PREFIX + k: v for k, v in vae_to_original(vae.vae.state_dict(), dict(vae.vae.config)).items()})
    family = family_named(clip.family)
    for (prefix, layout), encoder in zip(family.encoders, text_encoders(clip)):
        weights.update({prefix + k: v for k, v in layout.to_original(encoder.state_dict()).items()})
    return weights


def text_encoders(clip) -> list:
    return [clip.text_encoder] + ([clip.text_encoder_2] if clip.text_encoder_2 is not None else [])


def save_single_file(model, clip, vae, path: Path) -> Path:
    """Write MODEL + CLIP + VAE as one original-layout ``.safetensors``, atomically and never over an existing file
    (FileExistsError: :func:`graphflow.paths.atomic_save`). The diffusers /
    transformers configs go into the metadata, so graphflow restores exactly what shapes cannot show (attention
    head counts, scheduler); other tools ignore it."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in original_state_dict(model, clip, vae).items()}
    metadata = {
        "format": "pt",
        METADATA_PREFIX + "family": model.family,
        METADATA_PREFIX + "unet_config": json.dumps(public_config(model.unet.config)),
        METADATA_PREFIX + "vae_config": json.dumps(public_config(vae.vae.config)),
        **{f"{METADATA_PREFIX}{subfolder}_config": json.dumps(public_config(encoder.config.to_dict()))
           for subfolder, encoder in zip(text_subfolders(family_named(clip.family)), text_encoders(clip))},
        METADATA_PREFIX + "scheduler_config": json.dumps({**public_config(model.scheduler_config), "prediction_type": model.prediction_type}),
    }
    return atomic_save(path, lambda temporary: save_file(tensors, str(temporary), metadata=metadata))
