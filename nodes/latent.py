"""Latent-space nodes that need no model: empty latents, resizing, and a view of the channels.

Latents are 1/f the image size, where f is the VAE's downscale factor (``2 ** (len(block_out_channels) - 1)``,
as diffusers' ``vae_scale_factor``): 8 for Stable Diffusion's VAEs, 4 for toy-shapes', 2 for the built-in tiny
one. A node that converts between pixel sizes and latent sizes takes f from a VAE input and never guesses it:
the VAE is required where the conversion always happens, and refused by name where it is missing but needed.
"""

from typing import Literal

import torch
from pydantic import Field

from graphflow.context import RunContext
from graphflow.errors import NodeInputError
from graphflow.node import Input, node

from . import lazy_module
from .mask import latent_noise_mask, masks_for_batch, match_mask_to_image
from .pixels import check_pixels, image_grid, normalise
from .values import IMAGE, LATENT, MASK, VAE, Image, Latent, Mask, Vae

F = lazy_module("torch.nn.functional")  # torch loads on first use (see nodes/__init__.py)

UpscaleMethod = Literal["nearest-exact", "bilinear", "bicubic", "bilinear-antialiased", "bicubic-antialiased"]


def latent_geometry(vae: Vae | None, why: str = "it gives the latent scale") -> tuple[int, int]:
    """(downscale factor, latent channels) of the VAE connected to input ``vae``; none connected is refused,
    since factors differ between models (8 for SD, 4 for toy-shapes) and a guess makes a wrong-sized latent."""
    if vae is None:
        raise NodeInputError("vae", f"connect the VAE the latent is for: {why}", "a VAE link", "nothing connected")
    return vae.downscale, int(vae.vae.config.latent_channels)


# The largest downscale factor of the supported families (SD's): a latent's image size when no VAE says otherwise.
LARGEST_FACTOR = 8


def check_latent_pixels(ctx: RunContext, input_name: str, batch: int, height: int, width: int, vae: Vae | None) -> None:
    """:func:`~nodes.pixels.check_pixels` for a latent of ``batch`` × ``height`` × ``width``: counted as the image it
    decodes to, with the VAE's factor (or, with none connected, the largest one: a bound must not under-count)."""
    factor = vae.downscale if vae is not None else LARGEST_FACTOR
    check_pixels(ctx, input_name, batch, height * factor, width * factor, "image this latent decodes to")


@node(outputs={"latent": LATENT}, category="latent", pixels=("width", "height", "batch_size"))
def EmptyLatent(
    width: int = Field(512, ge=64, le=8192, multiple_of=8, description="image width in pixels"),
    height: int = Field(512, ge=64, le=8192, multiple_of=8, description="image height in pixels"),
    batch_size: int = Field(1, ge=1, le=64),
    vae: Vae = Input(VAE, description="gives the latent's channels and scale (its downscale factor)"),
    *,
    ctx: RunContext,
) -> Latent:
    """An all-zero latent batch for a width × height image; AddNoise turns it into the starting noise.

    The latent is (batch, channels, height/f, width/f) with the VAE's latent channels and downscale factor
    f (8 for SD, 4 for toy-shapes, 2 for the built-in tiny model)."""
    factor, channels = latent_geometry(vae)
    for name, side in (("width", width), ("height", height)):
        if side % factor:
            raise NodeInputError(name, f"must be a multiple of the VAE's downscale factor {factor}", f"a multiple of {factor}", side)
    check_pixels(ctx, "width", batch_size, height, width, "image this latent is for")
    return Latent(samples=torch.zeros(batch_size, channels, height // factor, width // factor))


@node(outputs={"latent": LATENT}, category="latent", pixels=("width", "height"))
def LatentUpscale(
    latent: Latent = Input(LATENT),
    method: UpscaleMethod = "nearest-exact",
    scale_by: float = Field(2.0, ge=0.05, le=8.0, description="used when width and height are both 0"),
    width: int = Field(0, ge=0, le=16384, multiple_of=8, description="target image width in pixels; 0 = from height's ratio (or scale_by)"),
    height: int = Field(0, ge=0, le=16384, multiple_of=8, description="target image height in pixels; 0 = from width's ratio (or scale_by)"),
    vae: Vae | None = Input(VAE, optional=True, description="gives the latent scale; needed when width or height is set"),
    *,
    ctx: RunContext,
) -> Latent:
    """Resize latents (the first step of a latent hires fix); the result is a clean latent to re-noise.

    Width and height are in image pixels: give both, one (the other keeps the aspect ratio), or neither
    (then ``scale_by`` scales both sides). A noise mask and masked-image latents are resized with it."""
    if width or height:
        factor, _ = latent_geometry(vae, "width and height are in image pixels")
        width, height = width // factor, height // factor
    h, w = latent.samples.shape[-2:]
    new_w, new_h = scaled_size(w, h, width, height, scale_by)
    check_latent_pixels(ctx, "width" if width else "height" if height else "scale_by", latent.batch_size, new_h, new_w, vae)
    size = (new_h, new_w)
    return Latent(
        samples=resize_latents(latent.samples, size, method),
        noise_mask=None if latent.noise_mask is None else resize_latents(latent.noise_mask, size, method).clamp(0, 1),
        masked_image=None if latent.masked_image is None else resize_latents(latent.masked_image, size, method),
    )


@node(outputs={"latent": LATENT}, category="latent")
def SetLatentNoiseMask(
    latent: Latent = Input(LATENT),
    mask: Mask = Input(MASK, description="at image size; 1 = repaint"),
    vae: Vae = Input(VAE, description="gives the latent scale, to fit the mask"),
    *,
    ctx: RunContext,
) -> Latent:
    """Limit sampling to the masked area: outside it, Sample keeps this latent (re-noised step by step).

    The mask is meant for the image this latent decodes to (latent size × the VAE's downscale factor):
    one of another size is resized to it with a warning, then brought to latent size with nearest
    neighbour as diffusers' inpainting pipeline does. Set the mask on the clean latent, before AddNoise.
    Any masked-image latents (from InpaintEncode) are kept as they are."""
    if latent.schedule is not None:
        raise NodeInputError("latent", "set the noise mask before AddNoise, on the clean latent", "a latent without noise", f"a latent noised for {latent.schedule.sampler}")
    factor, _ = latent_geometry(vae)
    h, w = latent.samples.shape[-2:]
    fitted = match_mask_to_image(mask, h * factor, w * factor, ctx.warn)
    noise_mask = latent_noise_mask(fitted, (h, w))
    masks_for_batch(noise_mask, latent.batch_size)  # refuses mask counts that fit neither 1 nor the batch
    return latent.replace(noise_mask=noise_mask.to(latent.samples.device))


@node(outputs={"latent": LATENT}, category="latent")
def RepeatLatent(
    latent: Latent = Input(LATENT),
    amount: int = Field(2, ge=1, le=64, description="copies of the batch, one after the other"),
    *,
    ctx: RunContext,
) -> Latent:
    """The batch repeated ``amount`` times, e.g. an img2img batch from one encoded image. Repeat the clean
    latent, before AddNoise, so every copy gets noise of its own. A noise mask, masked-image latents or an
    inpainting paste-back with one entry per image repeat with it; a single one keeps serving the whole batch."""
    if latent.schedule is not None:
        raise NodeInputError("latent", "repeat the clean latent, before AddNoise", "a latent without noise", f"a latent noised for {latent.schedule.sampler}")
    batch = latent.batch_size
    check_latent_pixels(ctx, "amount", batch * amount, *latent.samples.shape[-2:], None)

    def repeated(tensor: torch.Tensor | None) -> torch.Tensor | None:
        if tensor is None or (tensor.shape[0] == 1 and batch > 1):
            return tensor
        return tensor.repeat(amount, *([1] * (tensor.dim() - 1)))

    return Latent(samples=repeated(latent.samples), noise_mask=repeated(latent.noise_mask),
                  masked_image=repeated(latent.masked_image), paste_pixels=repeated(latent.paste_pixels),
                  paste_mask=repeated(latent.paste_mask))


def scaled_size(w: int, h: int, width: int, height: int, scale_by: float) -> tuple[int, int]:
    """(width, height) for resizing a w × h picture or latent: a 0 side follows the other side's aspect ratio,
    both 0 means ``scale_by`` times the current size. Shared by LatentUpscale and ImageScale."""
    if width == 0 and height == 0:
        width, height = round(w * scale_by), round(h * scale_by)
    elif width == 0:
        width = round(w * height / h)
    elif height == 0:
        height = round(h * width / w)
    return max(1, width), max(1, height)


def resize_latents(samples: "torch.Tensor", size: tuple[int, int], method: str) -> "torch.Tensor":
    """Interpolate (B, C, h, w) tensors to ``size``; "-antialiased" methods low-pass first when shrinking."""
    if method == "nearest-exact":
        return F.interpolate(samples, size=size, mode="nearest-exact")
    mode = method.removesuffix("-antialiased")
    return F.interpolate(samples, size=size, mode=mode, align_corners=False, antialias=method.endswith("-antialiased"))


@node(outputs={"image": IMAGE}, category="latent")
def LatentChannels(latent: Latent = Input(LATENT)) -> Image:
    """Show each latent channel as a grey picture, side by side in a grid (2×2 for SD's four channels).

    Every channel is stretched to the full black-to-white range on its own, so the picture shows where
    each channel varies, not how the channels compare."""
    samples = latent.samples.detach().float().cpu()
    channels = normalise(samples, dims=(2, 3))[..., None].expand(-1, -1, -1, -1, 3)
    return Image(pixels=torch.stack([image_grid(per_image) for per_image in channels]))
