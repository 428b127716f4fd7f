"""Between pixels and latents: the VAE's decoder and encoder, scaled the way diffusers' pipelines scale them.

InpaintEncode is VAEEncode for inpainting: besides the image's latents it gives the latent-size noise
mask and the latents of the image with the repainted area blanked out, which 9-channel inpainting
UNets take as extra input (``StableDiffusionInpaintPipeline``'s ``prepare_mask_latents``).

Paste-back lives in the latent rather than in a separate node, so the obvious graph (InpaintEncode → AddNoise
→ Sample → VAEDecode) keeps the unmasked pixels exactly, as the WebUI does: InpaintEncode stores the original
picture and the blurred mask in the latent (``paste_back``, ``mask_blur``), and VAEDecode composites the decoded
result over the original with it. ``paste_back=False`` gives the pipeline's own output (its parity tests).
"""
from __future__ import annotations

from typing import Callable

import torch
from pydantic import Field

from graphflow.context import RunContext
from graphflow.errors import NodeInputError
from graphflow.node import Input, node

from .tiling import run_tiled, tile_count, tile_counter
from .mask import gaussian_blur, latent_noise_mask, match_mask_to_image, masks_for_batch
from .pixels import check_pixels
from .values import IMAGE, LATENT, MASK, VAE, Image, Latent, Mask, Vae

BLANK = 0.5  # grey in [0, 1] is 0 in the VAE's [-1, 1]: what the pipeline's `image * (mask < 0.5)` leaves


def in_slices(run: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor, one_at_a_time: bool) -> torch.Tensor:
    """``run`` over the batch at once, or image by image (diffusers' VAE slicing: the activations of one image at a
    time instead of the whole batch's; the same pixels up to float rounding: every layer treats images separately)."""
    if not one_at_a_time or batch.shape[0] == 1:
        return run(batch)
    return torch.cat([run(item[None]) for item in batch])


def decode_latents(vae: Vae, samples: torch.Tensor, tile_size: int = 0, overlap: int = 64,
                   on_tile: Callable[[], None] | None = None, slice_batch: bool = False) -> torch.Tensor:
    """Latents (B, 4, h, w) scaled by the scaling factor → pixels (B, H, W, 3) float32 in [0, 1] on the CPU.

    ``tile_size`` > 0 decodes in overlapping tiles of that many pixels (see :func:`vae_tiles`), image by image;
    ``slice_batch`` decodes untiled image by image (:func:`in_slices`)."""
    model = vae.vae
    latents = samples.to(device=vae.device, dtype=model.dtype)
    with torch.no_grad():
        if tile_size:
            tile, shared = vae_tiles(vae, tile_size, overlap)
            run = lambda z: model.decode(z, return_dict=False)[0]  # noqa: E731
            decoded = torch.cat([run_tiled(run, z[None], tile, shared, scale=vae.downscale, on_tile=on_tile)
                                 for z in latents / vae.scaling_factor])
        else:
            decoded = in_slices(lambda z: model.decode(z, return_dict=False)[0], latents / vae.scaling_factor, slice_batch)
    pixels = (decoded * 0.5 + 0.5).clamp(0, 1)  # VaeImageProcessor.denormalize
    return pixels.permute(0, 2, 3, 1).float().cpu()


def encode_pixels(vae: Vae, pixels: torch.Tensor, tile_size: int = 0, overlap: int = 64,
                  on_tile: Callable[[], None] | None = None, slice_batch: bool = False) -> torch.Tensor:
    """Pixels (B, H, W, 3) in [0, 1] → the mode of the VAE's latent distribution, times the scaling factor.

    ``tile_size`` > 0 encodes in overlapping tiles of that many pixels (see :func:`vae_tiles`), image by image;
    ``slice_batch`` encodes untiled image by image (:func:`in_slices`)."""
    model = vae.vae
    chw = pixels.permute(0, 3, 1, 2).to(device=vae.device, dtype=model.dtype)
    with torch.no_grad():
        if tile_size:
            tile, shared = vae_tiles(vae, tile_size, overlap)
            run = lambda x: model.encode(x).latent_dist.mode()  # noqa: E731
            latents = torch.cat([run_tiled(run, x[None], tile, shared, shrink=vae.downscale, on_tile=on_tile)
                                 for x in 2.0 * chw - 1.0]).to(device=vae.device, dtype=model.dtype)
        else:
            # VaeImageProcessor.normalize, then encode
            latents = in_slices(lambda x: model.encode(x).latent_dist.mode(), 2.0 * chw - 1.0, slice_batch)
    # channels-last pixels give channels-last latents; the usual layout keeps the UNet's arithmetic the same
    # as for latents made any other way (convolutions sum in a layout-dependent order)
    return (vae.scaling_factor * latents).contiguous()


def vae_tiles(vae: Vae, tile_size: int, overlap: int) -> tuple[int, int]:
    """Tile side and overlap in latent pixels for sizes given in image pixels.

    Tiling bounds the memory of the VAE's activations by the tile instead of the image (the decoder of a
    1024² SD image needs gigabytes at once). It is not exact: the VAE's mid-block attention and group norms
    see the whole picture untiled and only their tile tiled, so tiles differ slightly from one pass; the
    blend across the overlap hides the seams (the difference is measured in tests/nodes/test_vae.py)."""
    factor = vae.downscale
    return max(1, tile_size // factor), overlap // factor


def vae_tile_count(vae: Vae, height: int, width: int, tile_size: int, overlap: int) -> int:
    tile, shared = vae_tiles(vae, tile_size, overlap)
    return tile_count(height // vae.downscale, width // vae.downscale, tile, shared)


def decoded_size(vae: Vae, latent: Latent) -> tuple[int, int]:
    """(height, width) in pixels of the picture ``vae`` decodes ``latent`` to."""
    height, width = latent.samples.shape[-2:]
    return height * vae.downscale, width * vae.downscale


def check_decoded_pixels(ctx: RunContext, vae: Vae, latent: Latent, input_name: str) -> None:
    """A shared server's pixel bound (:func:`~nodes.pixels.check_pixels`) for decoding ``latent``, before decoding."""
    check_pixels(ctx, input_name, latent.batch_size, *decoded_size(vae, latent), "decoded image")


def check_encodable(vae: Vae, image: Image) -> None:
    factor = vae.downscale
    for name, side in (("width", image.width), ("height", image.height)):
        if side % factor:
            raise NodeInputError("image", f"image {name} must be a multiple of the VAE's downscale factor {factor} (resize it with ImageScale)", f"a multiple of {factor}", side)


def paste_back(decoded: torch.Tensor, latent: Latent) -> torch.Tensor:
    """``decoded`` where the latent's paste mask is 1, its original pixels where it is 0, blended in between."""
    if latent.paste_pixels is None or latent.paste_mask is None:
        return decoded
    if tuple(latent.paste_pixels.shape[1:3]) != tuple(decoded.shape[1:3]):
        raise NodeInputError("latent", "its inpainting original does not fit the decoded size (was the latent resized without its paste-back?)",
                             f"{decoded.shape[2]}x{decoded.shape[1]}", f"{latent.paste_pixels.shape[2]}x{latent.paste_pixels.shape[1]}")
    batch = decoded.shape[0]
    alpha = masks_for_batch(latent.paste_mask, batch, "latent")[..., None].to(decoded)
    original = masks_for_batch(latent.paste_pixels, batch, "latent").to(decoded)
    return decoded * alpha + original * (1 - alpha)


TILE_SIZE = Field(0, ge=0, le=8192, multiple_of=8, description="0 = the whole image in one pass; else tiles of this many pixels (less memory for large images, slightly different result)")
TILE_OVERLAP = Field(64, ge=0, le=1024, multiple_of=8, description="pixels neighbouring tiles share; the seams are blended across them")
SLICE_BATCH = Field(False, description="one image of the batch at a time (less memory for a batch, the same pixels up to rounding; tiling always goes image by image)")


def check_tiles(tile_size: int, overlap: int) -> None:
    if tile_size and overlap >= tile_size:
        raise NodeInputError("tile_overlap", "must be smaller than tile_size", f"< {tile_size}", overlap)


@node(outputs={"image": IMAGE}, category="latent", version=2, neutral=("slice_batch",))
def VAEDecode(vae: Vae = Input(VAE), latent: Latent = Input(LATENT), tile_size: int = TILE_SIZE,
              tile_overlap: int = TILE_OVERLAP, slice_batch: bool = SLICE_BATCH, *, ctx: RunContext) -> Image:
    """Decode latents to an image: divide by the VAE's scaling factor, decode, map [-1, 1] to [0, 1].

    The same float pixels diffusers' pipelines return with ``output_type="pt"`` (before any uint8 rounding),
    channels last. An inpainting latent (InpaintEncode with ``paste_back``) is then composited over its
    original picture with its blurred mask: outside the mask the pixels are exactly the original's.
    ``tile_size`` decodes large images tile by tile (progress per tile, cancellable between tiles);
    ``slice_batch`` decodes a batch one image at a time (diffusers' VAE slicing)."""
    check_tiles(tile_size, tile_overlap)
    check_decoded_pixels(ctx, vae, latent, "latent")
    on_tile = None
    if tile_size:
        tiles = vae_tile_count(vae, *decoded_size(vae, latent), tile_size, tile_overlap)
        on_tile = tile_counter(ctx.progress, latent.batch_size * tiles)
    decoded = decode_latents(vae, latent.samples, tile_size, tile_overlap, on_tile, slice_batch)
    return Image(pixels=paste_back(decoded, latent))


@node(outputs={"latent": LATENT}, category="latent", neutral=("slice_batch",))
def VAEEncode(vae: Vae = Input(VAE), image: Image = Input(IMAGE), tile_size: int = TILE_SIZE,
              tile_overlap: int = TILE_OVERLAP, slice_batch: bool = SLICE_BATCH, *, ctx: RunContext) -> Latent:
    """Encode an image to latents, deterministically: the mode (mean) of the VAE's latent distribution.

    Pipelines sample the distribution with their generator instead; the mode keeps an encoded image the
    same on every run so it caches, and differs from a sample by the VAE's tiny posterior noise. The width
    and height must be multiples of the VAE's downscale factor (8 for SD). ``tile_size`` encodes large
    images tile by tile, and ``slice_batch`` a batch image by image, as VAEDecode decodes them."""
    check_encodable(vae, image)
    check_tiles(tile_size, tile_overlap)
    on_tile = None
    if tile_size:
        tiles = vae_tile_count(vae, image.height, image.width, tile_size, tile_overlap)
        on_tile = tile_counter(ctx.progress, image.batch_size * tiles)
    return Latent(samples=encode_pixels(vae, image.pixels, tile_size, tile_overlap, on_tile, slice_batch))


@node(outputs={"latent": LATENT}, category="latent", version=2)
def InpaintEncode(
    vae: Vae = Input(VAE),
    image: Image = Input(IMAGE),
    mask: Mask = Input(MASK, description="1 = repaint"),
    paste_back: bool = Field(True, description="after decoding, put the original pixels back outside the (blurred) mask, as the WebUI does"),
    mask_blur: int = Field(4, ge=0, le=256, description="blur radius in pixels of the paste-back mask (BlurMask's Gaussian)"),
    *,
    ctx: RunContext,
) -> Latent:
    """Encode an image for inpainting: its latents, the noise mask, and the masked-image latents.

    The latents are VAEEncode's. The mask is fitted to the image (resized with a warning if its size
    differs) and brought to latent size as diffusers' inpainting pipeline does (nearest neighbour). The
    masked image keeps the pixels where the mask is below 0.5 and blanks the rest to grey (0 in the VAE's
    range), then is encoded too: 9-channel inpainting UNets see it beside the mask. Works for 4-channel
    models as well, which only use the noise mask. A mask of batch 1 serves every image.

    With ``paste_back`` (the default) the latent also carries the picture and the mask blurred by
    ``mask_blur`` pixels, and VAEDecode blends the result into the original with it (A1111's "mask blur"
    and overlay): pixels farther than ``mask_blur`` from the mask stay exactly as they were. Off, the decoded
    image is the sampler's alone, equal to diffusers' StableDiffusionInpaintPipeline."""
    check_encodable(vae, image)
    fitted = match_mask_to_image(mask, image.height, image.width, ctx.warn)
    masks = masks_for_batch(fitted.mask, image.batch_size).to(image.pixels.device)
    keep = (masks < 0.5)[..., None]
    masked_pixels = torch.where(keep, image.pixels, torch.full_like(image.pixels, BLANK))
    samples = encode_pixels(vae, image.pixels)
    return Latent(
        samples=samples,
        noise_mask=latent_noise_mask(fitted, samples.shape[-2:]).to(samples.device),
        masked_image=encode_pixels(vae, masked_pixels),
        paste_pixels=image.pixels.clone() if paste_back else None,
        paste_mask=gaussian_blur(masks, mask_blur) if paste_back else None,
    )
