"""Looking at work in progress: cheap latent previews of a sampler's steps, kept as animation frames.

A sampler can show its progress without running the VAE: Stable Diffusion's four latent channels map
to RGB almost linearly, so a fixed 4×3 matrix gives a blurry but recognisable picture at latent
resolution (:func:`latent_to_rgb`). :func:`preview_png` turns latents or images into the small PNG that
``ctx.preview`` sends to clients. :class:`StepPreviews` is what Sample uses to show its steps and keep them
as the frames of a denoising animation.
"""
from __future__ import annotations

import io
from typing import Literal

import torch
from PIL import Image as PILImage

from graphflow.context import RunContext
from graphflow.errors import NodeInputError

from . import lazy_module
from .pixels import image_grid, normalise, pixels_to_pil
from .vae import decode_latents
from .values import Image, Latent, Vae

F = lazy_module("torch.nn.functional")  # torch loads on first use (see nodes/__init__.py)

PreviewMode = Literal["latent_rgb", "vae"]

# Linear map from scaled SD 1.x/2.x latents to decoded RGB in [-1, 1]: the factors published with ComfyUI's
# latent previews (rows are latent channels, columns R, G, B). The SD VAE's map has no offset.
SD_LATENT_RGB_FACTORS = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
)
SD_LATENT_RGB_BIAS = (0.0, 0.0, 0.0)
SD_DOWNSCALE = 8  # the picture size of latent_rgb frames when no VAE tells the real factor
PNG_COMPRESS_LEVEL = 1  # previews are sent every few steps: speed over size


def latent_to_rgb(latents: torch.Tensor | Latent) -> torch.Tensor:
    """Approximate pixels (B, h, w, 3) in [0, 1] of latents (B, C, h, w) scaled as the sampler sees them.

    Four-channel latents use the SD linear map (``rgb = latents·F + b`` in [-1, 1], then to [0, 1]).
    Latents with another channel count (other VAEs) have no known map: their channel mean is shown as
    grey, normalised per image, so a preview still shows structure instead of failing."""
    samples = latents.samples if isinstance(latents, Latent) else latents
    samples = samples.detach().float().cpu()
    if samples.dim() != 4:
        raise ValueError(f"latents must be (batch, channels, height, width), got shape {tuple(samples.shape)}")
    if samples.shape[1] == len(SD_LATENT_RGB_FACTORS):
        factors = torch.tensor(SD_LATENT_RGB_FACTORS)
        bias = torch.tensor(SD_LATENT_RGB_BIAS)
        rgb = torch.einsum("bchw,cr->bhwr", samples, factors) + bias
        return ((rgb + 1.0) / 2.0).clamp(0, 1)
    grey = normalise(samples.mean(1), dims=(1, 2))
    return grey[..., None].expand(-1, -1, -1, 3).contiguous()


def preview_png(source: torch.Tensor | Latent | Image, max_size: int = 256) -> bytes:
    """A small PNG of latents or pixels for live previews; a batch is shown as a grid.

    ``source`` is a LATENT/IMAGE value or a tensor: (B, H, W, 3) pixels, or (B, C, h, w) latents.
    The picture is shrunk to fit ``max_size`` on its longer side, never enlarged."""
    if isinstance(source, Image):
        pixels = source.pixels
    elif isinstance(source, Latent):
        pixels = latent_to_rgb(source)
    elif isinstance(source, torch.Tensor) and source.dim() == 4:
        pixels = source if source.shape[-1] == 3 else latent_to_rgb(source)
    else:
        raise ValueError("preview_png needs latents (B, C, h, w), pixels (B, H, W, 3), a Latent or an Image; "
                         f"got {type(source).__name__}")
    picture = pixels_to_pil(image_grid(pixels.detach().float().cpu())[None])[0]
    picture.thumbnail((max_size, max_size), PILImage.Resampling.BILINEAR)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def upscaled_latent_rgb(latents: torch.Tensor, factor: int) -> torch.Tensor:
    """:func:`latent_to_rgb` enlarged ``factor`` times (bilinear) to the size the latents decode to."""
    rgb = latent_to_rgb(latents).permute(0, 3, 1, 2)
    enlarged = F.interpolate(rgb, scale_factor=factor, mode="bilinear", align_corners=False)
    return enlarged.clamp(0, 1).permute(0, 2, 3, 1).contiguous()


class StepPreviews:
    """A sampler's work in progress: shown through ``ctx.preview`` every ``every`` steps and kept as frames.

    A frame is a picture of the latents at image size — their latent_rgb colours enlarged by the VAE's
    downscale factor (8 without a VAE), or ``mode="vae"``: decoded by the VAE — with a batch tiled into
    one grid, so the frames make one animation. Frames stay in memory until :meth:`frames` returns them
    (an image's worth of floats each)."""

    def __init__(self, every: int, mode: PreviewMode, vae: Vae | None, ctx: RunContext):
        if mode == "vae" and every > 0 and not isinstance(vae, Vae):
            raise NodeInputError("vae", 'preview_mode "vae" decodes the previews with a VAE; connect one',
                                 "a VAE link", "nothing connected")
        self.every, self.mode, self.ctx = every, mode, ctx
        self.vae = vae if isinstance(vae, Vae) else None
        # Without a VAE only the frames' picture size is unknown: draw them at SD's scale.
        self.factor = self.vae.downscale if self.vae is not None else SD_DOWNSCALE
        self._frames: list[torch.Tensor] = []

    def due(self, step: int, total: int) -> bool:
        """Whether ``step`` (1-based) gets a preview: every ``every`` steps, and always the last one."""
        return self.every > 0 and (step % self.every == 0 or step == total)

    def add(self, latents: torch.Tensor, step: int) -> None:
        frame = self.frame(latents, self.mode)
        self._frames.append(frame)
        self.ctx.preview(preview_png(frame), step)

    def frame(self, latents: torch.Tensor, mode: PreviewMode) -> torch.Tensor:
        if mode == "vae":
            pixels = decode_latents(self.vae, latents)
        else:
            pixels = upscaled_latent_rgb(latents, self.factor)
        return image_grid(pixels)[None]

    def frames(self, final_latents: torch.Tensor) -> Image:
        """The frames shown so far as an IMAGE batch; none shown (previews off, no step run): one latent_rgb
        frame of ``final_latents``, so the output always holds a picture."""
        frames = self._frames or [self.frame(final_latents, "latent_rgb")]
        return Image(pixels=torch.cat(frames))
