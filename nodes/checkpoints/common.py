"""What every part of the checkpoint package shares: the error, the result types and small key helpers."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..builtin_models import PACKAGE_MODELS

# Diffusers and transformers must never reach for the network: every config they need is local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CONFIGS = PACKAGE_MODELS / "configs"
METADATA_PREFIX = "graphflow."  # safetensors metadata keys graphflow writes (configs the shapes cannot show)


class CheckpointError(ValueError):
    """The file cannot be used as a Stable Diffusion checkpoint; the message says why."""


@dataclass(frozen=True)
class Components:
    """What a checkpoint loads into: modules on the CPU plus the facts needed to use them."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: Any
    scheduler_config: dict[str, Any]
    family: str
    prediction_type: str
    text_encoder_2: torch.nn.Module | None = None  # SDXL base's OpenCLIP encoder (see nodes.values.Clip)
    tokenizer_2: Any = None
    zero_empty_negative: bool = False  # the pipeline's force_zeros_for_empty_prompt


@dataclass(frozen=True)
class Detected:
    """What the weights of a single file say about the model."""

    family: str  # a Family.name: "sd1" | "sd2"
    inpainting: bool
    cross_attention_dim: int
    text_layout: str | None  # a TextLayout.name: "clip" | "openclip"; None when the file has no text encoder


def take_prefix(state_dict: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The entries whose key starts with ``prefix``, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def indices(keys, prefix: str) -> list[int]:
    """Sorted distinct integers that follow ``prefix`` in ``keys`` (block / layer numbers)."""
    found = {k[len(prefix):].split(".", 1)[0] for k in keys if k.startswith(prefix)}
    return sorted(int(i) for i in found if i.isdigit())


def shape(state_dict: dict[str, torch.Tensor], key: str, component: str) -> tuple[int, ...]:
    if key not in state_dict:
        raise CheckpointError(f"{component} weight {key} is missing")
    return tuple(state_dict[key].shape)


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def list_keys(keys: list[str], limit: int = 6) -> str:
    """The first few keys for an error message, and how many there are in all."""
    shown = ", ".join(keys[:limit])
    return shown + (f" … ({len(keys)} in all)" if len(keys) > limit else "")
