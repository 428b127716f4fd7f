"""ComfyUI's resizing of latents and images (its ``common_upscale``): an optional centre crop to the target's
aspect ratio, then interpolation. nearest-exact, bilinear and bicubic are graphflow's
:func:`nodes.latent.resize_latents`; area is torch's box filter; lanczos goes through 8-bit PIL images as
ComfyUI's does."""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from PIL import Image as PILImage

from .. import lazy_module
from ..latent import resize_latents

F = lazy_module("torch.nn.functional")

LatentMethod = Literal["nearest-exact", "bilinear", "area", "bicubic"]
ImageMethod = Literal["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
Crop = Literal["disabled", "center"]
MAX_RESOLUTION = 16384  # ComfyUI's bound on widths and heights


def centre_crop(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """``samples`` (B, C, h, w) cut to the aspect ratio of width × height, keeping the centre."""
    h, w = samples.shape[-2:]
    old, new = w / h, width / height
    x = y = 0
    if old > new:
        x = round((w - w * (new / old)) / 2)
    elif old < new:
        y = round((h - h * (old / new)) / 2)
    return samples[..., y:h - y, x:w - x]


def common_upscale(samples: torch.Tensor, width: int, height: int, method: str, crop: str) -> torch.Tensor:
    """(B, C, h, w) → (B, C, height, width)."""
    if crop == "center":
        samples = centre_crop(samples, width, height)
    if method == "area":
        return F.interpolate(samples, size=(height, width), mode="area")
    if method == "lanczos":
        return _lanczos(samples, width, height)
    return resize_latents(samples, (height, width), method)


def _lanczos(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    frames = []
    for frame in samples.movedim(1, -1).detach().float().cpu().numpy():
        picture = PILImage.fromarray(np.clip(255.0 * frame, 0, 255).astype(np.uint8))
        resized = picture.resize((width, height), resample=PILImage.Resampling.LANCZOS)
        frames.append(torch.from_numpy(np.asarray(resized).astype(np.float32) / 255.0))
    return torch.stack(frames).movedim(-1, 1).to(samples.device)


def upscale_pixels(pixels: torch.Tensor, width: int, height: int, method: str, crop: str = "disabled") -> torch.Tensor:
    """Channels-last images (B, H, W, 3) resized with :func:`common_upscale`."""
    return common_upscale(pixels.movedim(-1, 1), width, height, method, crop).movedim(1, -1).contiguous()


def fit_sides(width: int, height: int, w: int, h: int, minimum: int) -> tuple[int, int]:
    """ComfyUI's rule for a target size where 0 means "keep the aspect ratio": one side 0 follows the other's
    ratio, neither is below ``minimum``."""
    if width == 0:
        height = max(minimum, height)
        width = max(minimum, round(w * height / h))
    elif height == 0:
        width = max(minimum, width)
        height = max(minimum, round(h * width / w))
    else:
        width, height = max(minimum, width), max(minimum, height)
    return width, height
