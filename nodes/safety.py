"""The safety checker diffusers' Stable Diffusion pipelines ship with, as two nodes a workflow may use.

``LoadSafetyChecker`` reads a ``StableDiffusionSafetyChecker`` folder (config.json, the weights, and the
CLIP image processor's preprocessor_config.json; e.g. a copy of CompVis/stable-diffusion-safety-checker)
from ``<models_dir>/safety_checker/``, offline. ``SafetyCheck`` decides per image as the pipelines'
``run_safety_checker`` does (same processor, same model, same thresholds) and then blacks the flagged images
out (the pipelines' behaviour), blurs them, or only flags them.

What it does: compares each image's CLIP embedding with 17 concept and 3 "special care" embeddings stored in the
checkpoint against thresholds stored with them; nothing else. It misses much and flags some harmless pictures;
it knows only what its checkpoint's embeddings encode. Nothing runs it unless a workflow has the node.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from graphflow.context import RunContext
from graphflow.node import Input, node

from .files import resolve_inside
from .loaders import pick_device
from .mask import gaussian_blur
from .pixels import pixels_to_pil
from .search import MissingFile, file_fingerprint, preflight_check, search_folders
from .values import IMAGE, Image, SocketValue

SAFETY_CHECKER = "SAFETY_CHECKER"
FOLDER = "safety_checker"
DEFAULT_NAME = "stable-diffusion-safety-checker"
Mode = Literal["black", "blur", "flag"]


@dataclass(frozen=True, eq=False)
class SafetyChecker(SocketValue):
    """SAFETY_CHECKER: diffusers' StableDiffusionSafetyChecker with the CLIP image processor of its folder."""

    model: torch.nn.Module
    processor: Any  # transformers.CLIPImageProcessor (no tensors: not part of the size or digest)
    name: str

    def __graphflow_digest__(self) -> str:
        from .values import digest_of

        return digest_of((self.name, self.model))


def is_checker_folder(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "preprocessor_config.json").is_file()


def available_checkers(settings: Any) -> list[str]:
    names: set[str] = set()
    for folder in search_folders(settings, FOLDER):
        if folder.is_dir():
            names.update(p.name for p in folder.iterdir() if p.is_dir() and is_checker_folder(p))
    return sorted(names)


def checker_folder(name: str, settings: Any) -> Path:
    """The folder ``name`` refers to, or a NodeInputError on ``name`` listing the folders that exist."""
    for folder in search_folders(settings, FOLDER):
        path = resolve_inside(folder, name, "name")
        if path.is_dir() and is_checker_folder(path):
            return path
    available = available_checkers(settings)
    listing = ", ".join(available) if available else (
        f"none — put a safety checker folder (config.json, weights, preprocessor_config.json) in {search_folders(settings, FOLDER)[0]}")
    raise MissingFile("name", f"no safety checker folder named {name!r}", f"one of: {listing}", name)


def _fingerprint(literals: dict[str, Any], settings: Any) -> str:
    return file_fingerprint(checker_folder(literals["name"], settings) / "config.json")


def _preflight(literals: dict[str, Any], settings: Any) -> list:
    return preflight_check(lambda: checker_folder(literals["name"], settings), lambda: available_checkers(settings))


def load_safety_checker(folder: Path, name: str, device: torch.device | str = "cpu") -> SafetyChecker:
    """Both parts from ``folder`` alone: a local path with local_files_only never reaches a hub."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPImageProcessor

    model = StableDiffusionSafetyChecker.from_pretrained(folder, local_files_only=True).to(device).eval()
    processor = CLIPImageProcessor.from_pretrained(folder, local_files_only=True)
    return SafetyChecker(model=model, processor=processor, name=name)


@node(outputs={"safety_checker": SAFETY_CHECKER}, category="safety", pool="model", fingerprint=_fingerprint,
      preflight=_preflight)
def LoadSafetyChecker(
    name: str = Field(DEFAULT_NAME, description="folder in <models_dir>/safety_checker (a StableDiffusionSafetyChecker with its preprocessor_config.json)"),
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto",
    *,
    ctx: RunContext,
) -> SafetyChecker:
    """Load diffusers' Stable Diffusion safety checker and its CLIP image processor from a local folder."""
    return load_safety_checker(checker_folder(name, ctx.settings), name, pick_device(device))


def flagged_images(checker: SafetyChecker, pixels: torch.Tensor) -> list[bool]:
    """Which images the checker flags, computed as the pipelines' ``run_safety_checker`` computes it."""
    model = checker.model
    features = checker.processor(pixels_to_pil(pixels), return_tensors="pt")
    clip_input = features.pixel_values.to(device=model.device, dtype=model.dtype)
    throwaway = np.zeros((pixels.shape[0], 1, 1, 3))  # the model blacks out flagged entries of this in place
    with torch.no_grad():
        _, flags = model(clip_input=clip_input, images=throwaway)
    return [bool(flag) for flag in flags]


def hide(pixels: torch.Tensor, flags: list[bool], mode: Mode) -> torch.Tensor:
    """Flagged images black (the pipelines' choice) or blurred beyond recognition; the others untouched."""
    if mode == "flag" or not any(flags):
        return pixels
    out = pixels.clone()
    for index, flag in enumerate(flags):
        if not flag:
            continue
        if mode == "black":
            out[index] = 0
        else:
            radius = max(8, max(pixels.shape[1:3]) // 16)
            channels_first = pixels[index].permute(2, 0, 1)
            out[index] = gaussian_blur(channels_first, radius).permute(1, 2, 0)
    return out


@node(outputs={"images": IMAGE}, category="safety")
def SafetyCheck(
    images: Image = Input(IMAGE),
    safety_checker: SafetyChecker = Input(SAFETY_CHECKER),
    mode: Mode = Field("black", description="what happens to a flagged image: black (as diffusers' pipelines), blur, or flag only"),
    *,
    ctx: RunContext,
) -> Image:
    """Run diffusers' safety checker on every image; flagged ones are blacked out, blurred or only flagged.

    The result remembers which images were flagged: SaveImage records it per file in the run report
    (``"flagged": true``), and a warning names them. Unflagged images pass through unchanged."""
    flags = flagged_images(safety_checker, images.pixels)
    if any(flags):
        which = ", ".join(str(i) for i, flag in enumerate(flags) if flag)
        done = {"black": "blacked out", "blur": "blurred", "flag": "kept as they are"}[mode]
        ctx.warn(f"the safety checker flagged image(s) {which} of {len(flags)} ({done})")
    return Image(pixels=hide(images.pixels, flags, mode), flagged=tuple(flags))
