"""ComfyUI's latent nodes: EmptyLatentImage, LatentUpscale, LatentUpscaleBy, LatentFromBatch, RepeatLatentBatch,
SetLatentNoiseMask.

ComfyUI sizes latents at 1/8 of the picture with 4 channels whatever the model (Stable Diffusion's layout), and
so do these: with a VAE of another downscale factor (the built-in tiny model's is 2) the decoded picture is
that factor × the latent size. Latents are graphflow's (already scaled by the VAE's scaling factor, a noise mask
at latent size); ComfyUI keeps its noise mask at picture size and resizes it bilinearly when sampling, which
these nodes do when they set or resize one."""
import torch
from pydantic import Field

from graphflow.context import RunContext
from graphflow.errors import NodeInputError
from graphflow.node import Input, node

from .. import lazy_module
from ..latent import check_latent_pixels
from ..values import LATENT, MASK, Latent, Mask
from .resize import MAX_RESOLUTION, Crop, LatentMethod, common_upscale, fit_sides

F = lazy_module("torch.nn.functional")
LATENT_FACTOR, LATENT_CHANNELS = 8, 4


def noise_mask_at(mask: "torch.Tensor", size: tuple[int, int]) -> "torch.Tensor":
    """A mask (..., H, W) as the (B, 1, h, w) noise mask of a latent of ``size``: bilinear, as ComfyUI's sampler
    brings its picture-size noise masks to latent size."""
    flat = mask.reshape(-1, 1, *mask.shape[-2:]).float()
    return F.interpolate(flat, size=size, mode="bilinear")


def resized(latent: Latent, width: int, height: int, method: str, crop: str) -> Latent:
    """The latent at width × height (latent units), its noise mask and masked-image latents with it."""
    def scale(tensor):
        return None if tensor is None else common_upscale(tensor, width, height, method, crop)

    mask = None if latent.noise_mask is None else common_upscale(latent.noise_mask, width, height, "bilinear", crop)
    return Latent(samples=scale(latent.samples), noise_mask=mask, masked_image=scale(latent.masked_image),
                  batch_index=latent.batch_index)


@node(name="comfy.EmptyLatentImage", outputs={"LATENT": LATENT}, category="comfy/latent",
      pixels=("width", "height", "batch_size"))
def EmptyLatentImage(
    width: int = Field(512, ge=16, le=MAX_RESOLUTION),
    height: int = Field(512, ge=16, le=MAX_RESOLUTION),
    batch_size: int = Field(1, ge=1, le=4096),
) -> Latent:
    """An all-zero latent batch, (batch_size, 4, height // 8, width // 8)."""
    return Latent(samples=torch.zeros(batch_size, LATENT_CHANNELS, height // LATENT_FACTOR, width // LATENT_FACTOR))


@node(name="comfy.LatentUpscale", outputs={"LATENT": LATENT}, category="comfy/latent", pixels=("width", "height"))
def LatentUpscale(
    samples: Latent = Input(LATENT),
    upscale_method: LatentMethod = "nearest-exact",
    width: int = Field(512, ge=0, le=MAX_RESOLUTION, description="picture pixels; 0 = keep the aspect ratio"),
    height: int = Field(512, ge=0, le=MAX_RESOLUTION, description="picture pixels; 0 = keep the aspect ratio"),
    crop: Crop = "disabled",
    *,
    ctx: RunContext,
) -> Latent:
    """Resize latents to width × height picture pixels (latent side = pixels // 8); both 0 leaves them as they are."""
    if width == 0 and height == 0:
        return samples
    h, w = samples.samples.shape[-2:]
    width, height = fit_sides(width, height, w, h, 64)
    check_latent_pixels(ctx, "width", samples.batch_size, height // LATENT_FACTOR, width // LATENT_FACTOR, vae=None)
    return resized(samples, width // LATENT_FACTOR, height // LATENT_FACTOR, upscale_method, crop)


@node(name="comfy.LatentUpscaleBy", outputs={"LATENT": LATENT}, category="comfy/latent")
def LatentUpscaleBy(
    samples: Latent = Input(LATENT),
    upscale_method: LatentMethod = "nearest-exact",
    scale_by: float = Field(1.5, ge=0.01, le=8.0),
    *,
    ctx: RunContext,
) -> Latent:
    """Resize latents by a factor (each side rounded)."""
    h, w = samples.samples.shape[-2:]
    check_latent_pixels(ctx, "scale_by", samples.batch_size, round(h * scale_by), round(w * scale_by), vae=None)
    return resized(samples, round(w * scale_by), round(h * scale_by), upscale_method, "disabled")


def _rows(tensor, start: int, length: int, batch: int):
    """Rows start..start+length of a per-image tensor; one shared row (batch 1) stays shared."""
    if tensor is None or tensor.shape[0] == 1:
        return None if tensor is None else tensor.clone()
    if tensor.shape[0] < batch:
        tensor = tensor.repeat(-(-batch // tensor.shape[0]), *([1] * (tensor.dim() - 1)))[:batch]
    return tensor[start:start + length].clone()


@node(name="comfy.LatentFromBatch", outputs={"LATENT": LATENT}, category="comfy/latent")
def LatentFromBatch(
    samples: Latent = Input(LATENT),
    batch_index: int = Field(0, ge=0, le=63),
    length: int = Field(1, ge=1, le=64),
) -> Latent:
    """Images batch_index .. batch_index + length - 1 of a batch (clamped to it). They keep their place in the
    batch (``batch_index``) so a sampler gives them the noise they had there."""
    batch = samples.batch_size
    start = min(batch - 1, batch_index)
    length = min(batch - start, length)
    places = samples.batch_index or tuple(range(batch))
    return Latent(samples=samples.samples[start:start + length].clone(),
                  noise_mask=_rows(samples.noise_mask, start, length, batch),
                  masked_image=_rows(samples.masked_image, start, length, batch),
                  batch_index=tuple(places[start:start + length]))


@node(name="comfy.RepeatLatentBatch", outputs={"LATENT": LATENT}, category="comfy/latent")
def RepeatLatentBatch(samples: Latent = Input(LATENT), amount: int = Field(1, ge=1, le=64), *,
                      ctx: RunContext) -> Latent:
    """The batch repeated ``amount`` times; per-image masks repeat with it, places in the batch continue."""
    check_latent_pixels(ctx, "amount", samples.batch_size * amount, *samples.samples.shape[-2:], vae=None)
    def repeated(tensor):
        if tensor is None or tensor.shape[0] == 1:  # one mask serves the whole batch, repeated or not
            return tensor
        return tensor.repeat(amount, *([1] * (tensor.dim() - 1)))

    places = None
    if samples.batch_index is not None:
        offset = max(samples.batch_index) - min(samples.batch_index) + 1
        places = tuple(i + copy * offset for copy in range(amount) for i in samples.batch_index)
    return Latent(samples=samples.samples.repeat(amount, 1, 1, 1), noise_mask=repeated(samples.noise_mask),
                  masked_image=repeated(samples.masked_image), batch_index=places)


@node(name="comfy.SetLatentNoiseMask", outputs={"LATENT": LATENT}, category="comfy/latent")
def SetLatentNoiseMask(samples: Latent = Input(LATENT), mask: Mask = Input(MASK)) -> Latent:
    """Sample only where the mask is 1 (a mask of any size: it is brought to latent size bilinearly)."""
    if samples.schedule is not None:
        raise NodeInputError("samples", "set the noise mask on a clean latent", "a latent without noise",
                             f"a latent noised for {samples.schedule.sampler}")
    noise_mask = noise_mask_at(mask.mask, tuple(samples.samples.shape[-2:]))
    return samples.replace(noise_mask=noise_mask.to(samples.samples.device))
