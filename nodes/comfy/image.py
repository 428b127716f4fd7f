"""ComfyUI's image nodes: LoadImage, LoadImageMask, ImageScale, ImageScaleBy, ImageScaleToTotalPixels,
ImagePadForOutpaint, ImageUpscaleWithModel."""
import math
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from graphflow.context import RunContext
from graphflow.node import Input, node

from ..image import LoadImage as GraphflowLoadImage
from ..image import input_file, open_picture
from ..mask import check_padded_pixels
from ..pixels import check_pixels
from ..upscale import UpscaleWithModel
from ..values import IMAGE, MASK, UPSCALE_MODEL, Image, Mask
from .delegate import Renamed, comfy_name
from .resize import MAX_RESOLUTION, Crop, ImageMethod, fit_sides, upscale_pixels

_load = Renamed(GraphflowLoadImage, {"image": "name"}, file_inputs=("image",))


@node(name="comfy.LoadImage", outputs={"IMAGE": IMAGE, "MASK": MASK}, category="comfy/image",
      fingerprint=_load.fingerprint, preflight=_load.preflight)
def LoadImage(image: str = Field(description="a picture in the input folder"), *, ctx: RunContext) -> tuple[Image, Mask]:
    """A picture as RGB and its mask: 1 where it is transparent (an opaque picture: all 0)."""
    return _load(ctx, image=image)


def _mask_preflight(literals, settings):
    return _load.preflight({"image": literals.get("image")}, settings)


def _mask_fingerprint(literals, settings):
    return _load.fingerprint({"image": literals.get("image")}, settings)


@node(name="comfy.LoadImageMask", outputs={"MASK": MASK}, category="comfy/image",
      fingerprint=_mask_fingerprint, preflight=_mask_preflight)
def LoadImageMask(
    image: str = Field(description="a picture in the input folder"),
    channel: Literal["alpha", "red", "green", "blue"] = "alpha",
    *,
    ctx: RunContext,
) -> Mask:
    """One channel of a picture as a mask (alpha inverted: transparent = 1)."""
    name = comfy_name(image)
    with _load.errors():
        picture = open_picture(input_file(name, ctx.settings), "name", name)
    rgba = picture if picture.getbands() == ("R", "G", "B", "A") else picture.convert("RGBA")
    values = np.asarray(rgba.getchannel(channel[0].upper()), dtype=np.float32) / 255.0
    mask = torch.from_numpy(values.copy())
    return Mask(mask=(1.0 - mask if channel == "alpha" else mask)[None])


@node(name="comfy.ImageScale", outputs={"IMAGE": IMAGE}, category="comfy/image", pixels=("width", "height"))
def ImageScale(
    image: Image = Input(IMAGE),
    upscale_method: ImageMethod = "nearest-exact",
    width: int = Field(512, ge=0, le=MAX_RESOLUTION, description="0 = keep the aspect ratio"),
    height: int = Field(512, ge=0, le=MAX_RESOLUTION, description="0 = keep the aspect ratio"),
    crop: Crop = "disabled",
    *,
    ctx: RunContext,
) -> Image:
    """Resize pictures to width × height (both 0: unchanged), optionally cropped to that aspect ratio first."""
    if width == 0 and height == 0:
        return image
    width, height = fit_sides(width, height, image.width, image.height, 1)
    check_pixels(ctx, "width", image.batch_size, height, width, "resized image")
    return Image(pixels=upscale_pixels(image.pixels, width, height, upscale_method, crop))


@node(name="comfy.ImageScaleBy", outputs={"IMAGE": IMAGE}, category="comfy/image")
def ImageScaleBy(image: Image = Input(IMAGE), upscale_method: ImageMethod = "nearest-exact",
                 scale_by: float = Field(1.0, ge=0.01, le=8.0), *, ctx: RunContext) -> Image:
    """Resize pictures by a factor (each side rounded)."""
    width, height = round(image.width * scale_by), round(image.height * scale_by)
    check_pixels(ctx, "scale_by", image.batch_size, height, width, "resized image")
    return Image(pixels=upscale_pixels(image.pixels, width, height, upscale_method))


@node(name="comfy.ImageScaleToTotalPixels", outputs={"IMAGE": IMAGE}, category="comfy/image")
def ImageScaleToTotalPixels(image: Image = Input(IMAGE), upscale_method: ImageMethod = "nearest-exact",
                            megapixels: float = Field(1.0, ge=0.01, le=16.0), *, ctx: RunContext) -> Image:
    """Resize pictures to about ``megapixels`` × 1024 × 1024 pixels, keeping the aspect ratio."""
    scale = math.sqrt(megapixels * 1024 * 1024 / (image.width * image.height))
    width, height = round(image.width * scale), round(image.height * scale)
    check_pixels(ctx, "megapixels", image.batch_size, height, width, "resized image")
    return Image(pixels=upscale_pixels(image.pixels, width, height, upscale_method))


def outpaint_feather(height: int, width: int, left: int, top: int, right: int, bottom: int,
                     feathering: int) -> "torch.Tensor":
    """ComfyUI's mask over the original picture: ((feathering - d) / feathering)² within ``feathering`` pixels of
    a padded side (d: distance to the nearest padded side), 0 farther in; no feathering unless the picture is
    more than twice ``feathering`` in both directions."""
    inside = torch.zeros(height, width)
    if not (feathering > 0 and feathering * 2 < height and feathering * 2 < width):
        return inside
    rows = torch.arange(height, dtype=torch.float32)[:, None].expand(height, width)
    columns = torch.arange(width, dtype=torch.float32)[None, :].expand(height, width)
    far_h, far_w = torch.full_like(rows, height), torch.full_like(rows, width)
    distance = torch.stack([rows if top else far_h, height - rows if bottom else far_h,
                            columns if left else far_w, width - columns if right else far_w]).amin(0)
    ramp = (feathering - distance) / feathering
    return torch.where(distance < feathering, ramp * ramp, inside)


@node(name="comfy.ImagePadForOutpaint", outputs={"IMAGE": IMAGE, "MASK": MASK}, category="comfy/image")
def ImagePadForOutpaint(
    image: Image = Input(IMAGE),
    left: int = Field(0, ge=0, le=MAX_RESOLUTION),
    top: int = Field(0, ge=0, le=MAX_RESOLUTION),
    right: int = Field(0, ge=0, le=MAX_RESOLUTION),
    bottom: int = Field(0, ge=0, le=MAX_RESOLUTION),
    feathering: int = Field(40, ge=0, le=MAX_RESOLUTION),
    *,
    ctx: RunContext,
) -> tuple[Image, Mask]:
    """A bigger canvas, the new area grey (0.5), and a mask: 1 on the new area, feathered into the picture."""
    batch, height, width, channels = image.pixels.shape
    check_padded_pixels(ctx, batch, height, width, left, top, right, bottom)
    canvas = torch.full((batch, height + top + bottom, width + left + right, channels), 0.5)
    canvas[:, top:top + height, left:left + width] = image.pixels.cpu().float()
    mask = torch.ones(height + top + bottom, width + left + right)
    mask[top:top + height, left:left + width] = outpaint_feather(height, width, left, top, right, bottom, feathering)
    return Image(pixels=canvas), Mask(mask=mask[None])


@node(name="comfy.ImageUpscaleWithModel", outputs={"IMAGE": IMAGE}, category="comfy/image")
def ImageUpscaleWithModel(upscale_model=Input(UPSCALE_MODEL), image: Image = Input(IMAGE), *, ctx: RunContext) -> Image:
    """Upscale with a super-resolution model: graphflow's UpscaleWithModel with ComfyUI's 512-pixel tiles."""
    return UpscaleWithModel(upscale_model=upscale_model, image=image, tile_size=512, overlap=32, ctx=ctx)
