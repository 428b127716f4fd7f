"""Masks: which pixels inpainting may repaint (1) and which it keeps (0), with soft values in between.

A MASK is (B, H, W) float in [0, 1] at image resolution. Masks come from LoadImage (a mask file, or the
picture's alpha channel via :func:`load_mask_from_rgba`), from one of an image's colour channels
(MaskFromImage) or from PadImageForOutpaint, and are reshaped by GrowMask, FeatherMask, BlurMask and
InvertMask. InpaintEncode and SetLatentNoiseMask bring them to latent size (:func:`latent_noise_mask`).
"""
from __future__ import annotations

import math
from typing import Callable, Literal

import numpy as np
import torch
from PIL import Image as PILImage
from pydantic import Field

from graphflow.context import RunContext
from graphflow.errors import NodeInputError
from graphflow.node import Input, node

from . import lazy_module
from .pixels import check_pixels
from .values import IMAGE, MASK, Image, Mask

F = lazy_module("torch.nn.functional")  # torch loads on first use (see nodes/__init__.py)

LUMA_601 = (0.299, 0.587, 0.114)  # Rec. 601 weights, the ones PIL uses for RGB → "L"
CHANNELS = {"red": 0, "green": 1, "blue": 2}
OUTPAINT_FILL = 0.5  # neutral grey: no colour for the sampler to continue into the new area


def luminance(rgb: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Rec. 601 luma of RGB stacked along ``dim`` (which is kept, with size 1)."""
    weights = torch.tensor(LUMA_601, dtype=rgb.dtype, device=rgb.device)
    shape = [1] * rgb.dim()
    shape[dim] = 3
    return (rgb * weights.view(shape)).sum(dim, keepdim=True)


def load_mask_from_rgba(picture: PILImage.Image) -> Mask:
    """The inpainting mask of a picture: 1 where it is transparent, 0 where opaque, (1, H, W).

    Erasing part of a picture in an editor makes it transparent, so transparency marks what to repaint
    (as in ComfyUI and A1111). A picture without any alpha gives an all-zero mask: nothing to repaint."""
    has_alpha = picture.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in picture.info
    if not has_alpha:
        return Mask(mask=torch.zeros(1, picture.height, picture.width))
    alpha = np.asarray(picture.convert("RGBA").getchannel("A"), dtype=np.float32) / 255.0
    return Mask(mask=1.0 - torch.from_numpy(alpha.copy())[None])


def match_mask_to_image(mask: Mask, height: int, width: int, warn: Callable[[str], None] | None = None) -> Mask:
    """``mask`` at height × width: unchanged when it already fits, else resized bilinearly with a warning.

    Bilinear (antialiased when shrinking) keeps soft edges soft; the warning (pass ``ctx.warn``) tells the
    user the mask was made for another size, which usually means the wrong mask is connected — but a
    mask drawn on a downscaled copy of the image is common enough that refusing would be unfriendly."""
    h, w = mask.mask.shape[-2:]
    if (h, w) == (height, width):
        return mask
    if warn is not None:
        warn(f"mask is {w}x{h} but the image is {width}x{height}; the mask was resized to fit")
    resized = F.interpolate(mask.mask[:, None].float(), size=(height, width), mode="bilinear", align_corners=False,
                            antialias=height < h or width < w)
    return Mask(mask=resized[:, 0].clamp(0, 1))


def latent_noise_mask(mask: Mask, size: tuple[int, int]) -> torch.Tensor:
    """A mask at image size → the (B, 1, h, w) noise mask of a latent of ``size`` (h, w).

    Nearest neighbour, as diffusers' inpainting pipeline resizes its mask in ``prepare_mask_latents``
    (``F.interpolate``'s default mode). The pipeline first binarizes the mask at 0.5; soft values are kept
    here so feathered masks blend gradually — for a 0/1 mask the two are the same."""
    return F.interpolate(mask.mask[:, None].float(), size=tuple(int(s) for s in size))


def masks_for_batch(masks: torch.Tensor, batch: int, input_name: str = "mask") -> torch.Tensor:
    """Masks (b, ...) for a batch of ``batch``: one mask serves every item, otherwise the counts must agree."""
    if masks.shape[0] == batch:
        return masks
    if masks.shape[0] == 1:
        return masks.expand(batch, *masks.shape[1:])
    raise NodeInputError(input_name, f"{masks.shape[0]} masks cannot be matched to a batch of {batch}", f"1 or {batch} masks", masks.shape[0])


@node(outputs={"mask": MASK}, category="mask")
def MaskFromImage(
    image: Image = Input(IMAGE),
    channel: Literal["red", "green", "blue", "luminance"] = "luminance",
) -> Mask:
    """A mask from one channel of an image: white (1) repaints, black (0) keeps.

    ``luminance`` uses Rec. 601 weights, so a black-and-white mask painted in any editor works as is."""
    pixels = image.pixels
    values = luminance(pixels)[..., 0] if channel == "luminance" else pixels[..., CHANNELS[channel]]
    return Mask(mask=values.clamp(0, 1).clone())


@node(outputs={"mask": MASK}, category="mask")
def InvertMask(mask: Mask = Input(MASK)) -> Mask:
    """Swap what is repainted and what is kept (1 − mask)."""
    return Mask(mask=1.0 - mask.mask)


def grow(mask: torch.Tensor, pixels: int, tapered: bool, check: Callable[[], None] | None = None) -> torch.Tensor:
    """Dilate (pixels > 0) or erode (pixels < 0) a (B, H, W) mask by |pixels| pixels.

    Grey-level morphology, so soft masks stay soft. ``tapered`` grows in a diamond (4-neighbour steps,
    rounded-looking corners); otherwise in a square (8-neighbour steps, corners stay square). Erosion is
    dilation of the inverse; outside the image counts as "unchanged", so masks touching the border
    do not shrink away from it. ``check`` (a node's ``ctx.check_cancelled``) runs between the diamond's steps."""
    if pixels == 0:
        return mask.clone()
    x = mask[:, None].float()
    if pixels < 0:
        x = 1.0 - x
    steps = abs(pixels)
    if tapered:
        for _ in range(steps):
            if check is not None:
                check()
            x = _max_of_cross(x)
    else:  # a (2r+1)² max filter is r square steps at once; rows then columns keeps it O(r) per pixel
        x = F.max_pool2d(x, kernel_size=(1, 2 * steps + 1), stride=1, padding=(0, steps))
        x = F.max_pool2d(x, kernel_size=(2 * steps + 1, 1), stride=1, padding=(steps, 0))
    if pixels < 0:
        x = 1.0 - x
    return x[:, 0]


def _max_of_cross(x: torch.Tensor) -> torch.Tensor:
    padded = F.pad(x, (1, 1, 1, 1), value=-math.inf)
    return torch.stack([x, padded[..., :-2, 1:-1], padded[..., 2:, 1:-1], padded[..., 1:-1, :-2], padded[..., 1:-1, 2:]]).amax(0)


@node(outputs={"mask": MASK}, category="mask")
def GrowMask(
    mask: Mask = Input(MASK),
    pixels: int = Field(8, ge=-1024, le=1024, description="how far to grow; negative values shrink"),
    tapered: bool = Field(True, description="grow in a diamond (rounder corners) instead of a square"),
    *,
    ctx: RunContext,
) -> Mask:
    """Grow or shrink the repainted area by a number of pixels (giving inpainting room to blend in)."""
    return Mask(mask=grow(mask.mask, pixels, tapered, ctx.check_cancelled))


def edge_ramp(size: int, start: int, end: int) -> torch.Tensor:
    """1-D factor over ``size`` pixels: rises linearly over the first ``start`` pixels, falls over the last ``end``."""
    position = torch.arange(size, dtype=torch.float32)
    rise = ((position + 1) / (start + 1)).clamp(max=1) if start else torch.ones(size)
    fall = ((size - position) / (end + 1)).clamp(max=1) if end else torch.ones(size)
    return torch.minimum(rise, fall)


@node(outputs={"mask": MASK}, category="mask")
def FeatherMask(
    mask: Mask = Input(MASK),
    left: int = Field(0, ge=0, le=8192, description="pixels of fade-out at the left edge"),
    top: int = Field(0, ge=0, le=8192),
    right: int = Field(0, ge=0, le=8192),
    bottom: int = Field(0, ge=0, le=8192),
) -> Mask:
    """Fade the mask out towards the image's edges: linear ramps of the given widths, side by side.

    The mask is multiplied by a ramp from almost 0 at an edge to 1 at the given distance from it (like
    ComfyUI's FeatherMask), e.g. so inpainting a band along the border fades into the untouched part.
    To soften the mask's own outline instead, use BlurMask."""
    height, width = mask.mask.shape[-2:]
    factor = edge_ramp(height, top, bottom)[:, None] * edge_ramp(width, left, right)[None, :]
    return Mask(mask=mask.mask * factor.to(mask.mask.device))


def gaussian_blur(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable Gaussian blur of a (B, H, W) mask, sigma = radius / 2, edges replicated."""
    if radius == 0:
        return mask.clone()
    sigma = radius / 2
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(mask.device)
    x = mask[:, None].float()
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return x[:, 0].clamp(0, 1)


def check_padded_pixels(ctx, batch: int, height: int, width: int, left: int, top: int, right: int, bottom: int) -> None:
    """A shared server's pixel bound for a canvas padded by these sides, before it is made; a refusal names the
    widest side's input."""
    widest = max(("left", left), ("top", top), ("right", right), ("bottom", bottom), key=lambda side: side[1])[0]
    check_pixels(ctx, widest, batch, height + top + bottom, width + left + right, "padded canvas")


@node(outputs={"mask": MASK}, category="mask")
def BlurMask(
    mask: Mask = Input(MASK),
    radius: int = Field(8, ge=0, le=256, description="blur radius in pixels (Gaussian, sigma = radius / 2)"),
) -> Mask:
    """Soften the mask's outline with a Gaussian blur, so the repainted area blends into what is kept."""
    height, width = mask.mask.shape[-2:]
    if radius >= max(height, width):
        raise NodeInputError("radius", "must be smaller than the mask", f"< {max(height, width)}", radius)
    return Mask(mask=gaussian_blur(mask.mask, radius))


def outpaint_mask(height: int, width: int, left: int, top: int, right: int, bottom: int, feathering: int) -> torch.Tensor:
    """(H', W') mask of a padded canvas: 1 on the padding, ramping down to 0 over ``feathering`` pixels
    into the original image from each padded side (sides without padding are not feathered)."""
    canvas_h, canvas_w = height + top + bottom, width + left + right
    mask = torch.ones(canvas_h, canvas_w)
    inside = torch.zeros(height, width)
    if feathering > 0:
        y = torch.arange(height, dtype=torch.float32)[:, None].expand(height, width)
        x = torch.arange(width, dtype=torch.float32)[None, :].expand(height, width)
        distances = [d for d, padded in ((x, left), (y, top), (width - 1 - x, right), (height - 1 - y, bottom)) if padded]
        if distances:
            nearest = torch.stack(distances).amin(0)  # to the closest padded side
            inside = ((feathering - nearest) / (feathering + 1)).clamp(0, 1)
    mask[top:top + height, left:left + width] = inside
    return mask


@node(outputs={"image": IMAGE, "mask": MASK}, category="mask")
def PadImageForOutpaint(
    image: Image = Input(IMAGE),
    left: int = Field(0, ge=0, le=4096, multiple_of=8, description="pixels to add on the left"),
    top: int = Field(0, ge=0, le=4096, multiple_of=8),
    right: int = Field(0, ge=0, le=4096, multiple_of=8),
    bottom: int = Field(0, ge=0, le=4096, multiple_of=8),
    feathering: int = Field(40, ge=0, le=1024, description="pixels over which the mask fades into the original image"),
    *,
    ctx: RunContext,
) -> tuple[Image, Mask]:
    """Extend the canvas for outpainting: new area filled with neutral grey, and a mask that repaints it.

    The mask is 1 on the new area and fades linearly to 0 over ``feathering`` pixels into the original,
    so the sampler may adjust the original near the seam and the extension blends in. Sides are
    multiples of 8 so the canvas stays a valid latent size."""
    pixels = image.pixels
    batch, height, width, _ = pixels.shape
    check_padded_pixels(ctx, batch, height, width, left, top, right, bottom)
    padded = F.pad(pixels.permute(0, 3, 1, 2), (left, right, top, bottom), value=OUTPAINT_FILL).permute(0, 2, 3, 1)
    mask = outpaint_mask(height, width, left, top, right, bottom, feathering).to(pixels.device)
    return Image(pixels=padded.contiguous()), Mask(mask=mask.expand(batch, -1, -1).clone())
