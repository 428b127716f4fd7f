"""Pixel tensors ↔ PIL pictures, and grids: the leaf every image-handling module builds on.

Pixels are IMAGE tensors (B, H, W, 3) of floats in [0, 1]; this module imports nothing from the node library.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image as PILImage


def pixels_to_pil(pixels: torch.Tensor, truncate: bool = False) -> list[PILImage.Image]:
    """(B, H, W, 3) floats in [0, 1] → 8-bit RGB images, rounded as diffusers' numpy_to_pil rounds (or, with
    ``truncate``, clipped and cut to whole numbers as ComfyUI's image savers do)."""
    scaled = pixels.detach().cpu().float().numpy() * 255
    array = (np.clip(scaled, 0, 255) if truncate else scaled.round()).astype("uint8")
    return [PILImage.fromarray(frame) for frame in array]


def pil_to_pixels(images: list[PILImage.Image]) -> torch.Tensor:
    """8-bit RGB images of one size → (B, H, W, 3) float32 in [0, 1]."""
    return torch.from_numpy(np.stack([np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0 for img in images]))


def image_grid(pixels: torch.Tensor, columns: int | None = None) -> torch.Tensor:
    """Lay (N, H, W, C) pictures out row by row in a (rows·H, columns·W, C) grid; empty cells are black.

    ``columns`` defaults to ceil(sqrt(N)), the squarest grid."""
    count, height, width, channels = pixels.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    cells = torch.zeros(rows * columns, height, width, channels, dtype=pixels.dtype, device=pixels.device)
    cells[:count] = pixels
    by_row = cells.view(rows, columns, height, width, channels).permute(0, 2, 1, 3, 4)  # rows, H, columns, W, C
    return by_row.reshape(rows * height, columns * width, channels)


def normalise(values: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Stretch ``values`` to [0, 1] over ``dims`` (a constant becomes 0.5)."""
    low, high = values.amin(dims, keepdim=True), values.amax(dims, keepdim=True)
    span = high - low
    return torch.where(span > 0, (values - low) / span.clamp(min=1e-12), torch.full_like(values, 0.5))


def check_pixels(ctx, input_name: str, batch: int, height: int, width: int, what: str = "image") -> None:
    """Refuse (NodeInputError on ``input_name``) to make ``what`` of ``batch`` × ``width``×``height`` pixels when a
    server bounds the pixels one node makes (``Settings.limits["pixels"]``): called before allocating, so a
    workflow that grows an image step by step (ImageScale ×16, ×16, ×2) stops at the node that would overflow."""
    ctx.check_limit("pixels", batch * height * width, input_name, f"the {what} ({batch} × {width}×{height} pixels)")
