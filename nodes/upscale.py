"""Upscaling in pixel space with super-resolution models (ESRGAN, Real-ESRGAN, SwinIR, ... through spandrel).

Model files live in ``<models_dir>/upscale_models``, then ``upscale_models/`` in the read-only asset folders
(``settings.asset_dirs``, see :mod:`nodes.search`); spandrel reads the state dict (``.pth`` through its
restricted unpickler, ``.safetensors``), recognises the architecture from the key layout and builds the
network. A 4× model on a 1024² image would need gigabytes of activations in one pass, so the image is cut
into overlapping tiles, each tile upscaled on its own and the tiles blended back (see :func:`nodes.tiling.run_tiled`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import torch
from pydantic import Field

from graphflow.context import RunContext
from graphflow.errors import NodeInputError
from graphflow.node import Input, node

from .loaders import pick_device
from .mask import luminance
from .pixels import check_pixels
from .tiling import run_tiled, tile_count, tile_counter
from .search import file_fingerprint, files_in, model_file, preflight_check, search_folders
from .values import IMAGE, UPSCALE_MODEL, Image, SocketValue, digest_of, nbytes_of

MODEL_FOLDER = "upscale_models"
MODEL_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")  # what spandrel's loader reads


@dataclass(frozen=True, eq=False)
class SpandrelModel(SocketValue):
    """A model spandrel loaded (its ``ImageModelDescriptor``) and its file name: what the upscaler and face
    restoration sockets carry; its weights are its size and, with the name, its digest."""

    descriptor: Any
    name: str

    @property
    def module(self) -> torch.nn.Module:
        return self.descriptor.model

    @property
    def nbytes(self) -> int:
        return nbytes_of(self.module)

    def __graphflow_digest__(self) -> str:
        return digest_of((self.name, self.module))


@dataclass(frozen=True, eq=False)
class UpscaleModel(SpandrelModel):
    """UPSCALE_MODEL: a loaded image-to-image model (spandrel ``ImageModelDescriptor``) and its file name."""

    @property
    def scale(self) -> int:
        return int(self.descriptor.scale)

    @property
    def architecture(self) -> str:
        return str(self.descriptor.architecture.name)


# ---------------------------------------------------------------------------------------------- loading

def model_folders(settings: Any) -> list[Path]:
    """Where upscale models are looked up, in order: ``<models_dir>/upscale_models``, then every asset folder's."""
    return search_folders(settings, MODEL_FOLDER)


def available_models(settings: Any) -> list[str]:
    """Model files in the upscale model folders (sub-folders included), as names LoadUpscaleModel takes."""
    return files_in(model_folders(settings), MODEL_SUFFIXES)


def model_path(name: str, settings: Any) -> Path:
    """The file ``name`` refers to, or a NodeInputError on ``name`` listing the files that exist."""
    return model_file(name, model_folders(settings), MODEL_SUFFIXES, "upscale model")


def supported_architectures() -> list[str]:
    """Names of the architectures the installed spandrel recognises."""
    import spandrel

    return [support.architecture.name for support in spandrel.MAIN_REGISTRY.architectures()]


def model_file_fingerprint(literals: dict[str, Any], settings: Any) -> str:
    """Changes when the model file is replaced or edited, or a file in the models folder shadows an asset,
    so the engine reloads it."""
    return file_fingerprint(model_path(literals["name"], settings))


def model_preflight(literals: dict[str, Any], settings: Any) -> list:
    return preflight_check(lambda: model_path(literals["name"], settings), lambda: available_models(settings))


def load_upscale_model(path: Path, name: str, device: torch.device | str = "cpu") -> UpscaleModel:
    """Read ``path`` with spandrel; every way that can fail becomes a NodeInputError on ``name``."""
    import spandrel

    try:
        descriptor = spandrel.ModelLoader(device=device).load_from_file(path)
    except spandrel.UnsupportedModelError:
        raise NodeInputError("name", f"spandrel does not recognise the architecture of {name!r}",
                             f"a model of one of: {', '.join(supported_architectures())}", name) from None
    except Exception as exc:  # corrupt file, pickle with forbidden objects, not a state dict at all
        raise NodeInputError("name", f"could not read {name!r} as a model file: {exc}",
                             "a .pth or .safetensors state dict", name) from None
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise NodeInputError("name", f"{name!r} is a {descriptor.architecture.name} {descriptor.purpose} model, "
                             "which also needs a mask", "an image-to-image model (super-resolution or restoration)", name)
    return UpscaleModel(descriptor=descriptor.eval(), name=name)


@node(outputs={"upscale_model": UPSCALE_MODEL}, category="upscale", pool="model", fingerprint=model_file_fingerprint,
      preflight=model_preflight)
def LoadUpscaleModel(
    name: str = Field(description="file in <models_dir>/upscale_models (or an asset folder's upscale_models), e.g. RealESRGAN_x4plus.pth"),
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto",
    *,
    ctx: RunContext,
) -> UpscaleModel:
    """Load a super-resolution or restoration model (ESRGAN, Real-ESRGAN, SwinIR, HAT, ...) with spandrel.

    The file is looked up in ``<models_dir>/upscale_models``, then in ``upscale_models/`` of each asset
    folder. The architecture and scale are recognised from the weights; a file spandrel cannot identify is
    refused with the list of architectures it supports."""
    return load_upscale_model(model_path(name, ctx.settings), name, pick_device(device))


def run_model(descriptor: Any, tile: torch.Tensor) -> torch.Tensor:
    """One forward pass of a spandrel model on a (1, C, h, w) tile in [0, 1] (its own device and dtype)."""
    return descriptor(tile.to(device=descriptor.device, dtype=descriptor.dtype))


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def to_model_channels(pixels: torch.Tensor, channels: int, model_name: str) -> torch.Tensor:
    """(H, W, 3) image → (1, channels, H, W): RGB as is, grey models get Rec. 601 luminance."""
    chw = pixels.permute(2, 0, 1)[None]
    if channels == 3:
        return chw
    if channels == 1:
        return luminance(chw, dim=1)
    raise NodeInputError("upscale_model", f"{model_name} takes {channels}-channel input, images here are RGB",
                         "a model with 1 or 3 input channels", channels)


def from_model_channels(output: torch.Tensor) -> torch.Tensor:
    """(1, C, H, W) model output → (H, W, 3); one grey channel is repeated into RGB."""
    rgb = output[0].expand(3, -1, -1) if output.shape[1] == 1 else output[0, :3]
    return rgb.permute(1, 2, 0)


def upscale_image(model: UpscaleModel, pixels: torch.Tensor, tile: int, overlap: int,
                  on_tile: Callable[[], None] | None = None) -> torch.Tensor:
    """(B, H, W, 3) → (B, H·s, W·s, 3), image by image, tile by tile."""
    descriptor = model.descriptor
    results = []
    for picture in pixels:
        chw = to_model_channels(picture, descriptor.input_channels, model.name)
        upscaled = run_tiled(lambda t: run_model(descriptor, t), chw, tile, overlap, scale=model.scale, on_tile=on_tile)
        results.append(from_model_channels(upscaled))
    return torch.stack(results).clamp(0, 1)


@node(outputs={"image": IMAGE}, category="upscale")
def UpscaleWithModel(
    upscale_model: UpscaleModel = Input(UPSCALE_MODEL),
    image: Image = Input(IMAGE),
    tile_size: int = Field(512, ge=32, le=4096, multiple_of=8,
                           description="tile side in input pixels; lower it if memory runs out"),
    overlap: int = Field(32, ge=0, le=1024,
                         description="input pixels shared by neighbouring tiles; seams are blended across them"),
    *,
    ctx: RunContext,
) -> Image:
    """Upscale an image with a super-resolution model, tile by tile with blended seams.

    The scale is the model's (4 for RealESRGAN_x4plus). Progress is reported per tile and the node can be
    cancelled between tiles. If a tile runs out of memory, the image is redone once with tiles of half the
    size (a warning says so) before the node fails."""
    if overlap >= tile_size:
        raise NodeInputError("overlap", "must be smaller than tile_size", f"< {tile_size}", overlap)
    scale = upscale_model.scale
    check_pixels(ctx, "image", image.batch_size, image.height * scale, image.width * scale, f"×{scale} upscaled image")
    try:
        return Image(pixels=upscale_with_progress(upscale_model, image, tile_size, overlap, ctx))
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
    _release_cached_memory()  # outside the except block, so the failed attempt's tensors are already freed
    half, half_overlap = tile_size // 2, min(overlap, tile_size // 4)
    ctx.warn(f"out of memory with {tile_size}px tiles; retrying with {half}px tiles (overlap {half_overlap})")
    try:
        return Image(pixels=upscale_with_progress(upscale_model, image, half, half_overlap, ctx))
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
    _release_cached_memory()
    raise NodeInputError("tile_size", f"ran out of memory even with {half}px tiles; lower tile_size or free memory",
                         f"a tile size below {half}", tile_size)


def upscale_with_progress(model: UpscaleModel, image: Image, tile: int, overlap: int, ctx: RunContext) -> torch.Tensor:
    """:func:`upscale_image` reporting ``ctx.progress(tile, n_tiles)`` after every tile (which also checks cancel)."""
    total = image.batch_size * tile_count(image.height, image.width, tile, overlap)
    return upscale_image(model, image.pixels, tile, overlap, tile_counter(ctx.progress, total))


def _release_cached_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
