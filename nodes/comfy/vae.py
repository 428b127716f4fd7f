"""ComfyUI's VAE nodes: VAEDecode, VAEEncode, VAEEncodeForInpaint, over graphflow's decode_latents / encode_pixels
(which encode deterministically, the mode of the latent distribution, as ComfyUI does)."""
import math

import torch
from pydantic import Field

from graphflow.context import RunContext
from graphflow.node import Input, node

from .. import lazy_module
from ..vae import check_decoded_pixels, decode_latents, encode_pixels
from ..values import IMAGE, LATENT, MASK, VAE, Image, Latent, Mask, Vae
from .latent import noise_mask_at

F = lazy_module("torch.nn.functional")


def crop_offsets(height: int, width: int, factor: int) -> tuple[slice, slice]:
    """ComfyUI's crop of a picture to whole multiples of the VAE's factor, centred."""
    h, w = height // factor * factor, width // factor * factor
    top, left = (height % factor) // 2, (width % factor) // 2
    return slice(top, top + h), slice(left, left + w)


@node(name="comfy.VAEDecode", outputs={"IMAGE": IMAGE}, category="comfy/latent")
def VAEDecode(samples: Latent = Input(LATENT), vae: Vae = Input(VAE), *, ctx: RunContext) -> Image:
    """Decode latents to pixels in [0, 1]."""
    check_decoded_pixels(ctx, vae, samples, "samples")
    return Image(pixels=decode_latents(vae, samples.samples))


@node(name="comfy.VAEEncode", outputs={"LATENT": LATENT}, category="comfy/latent")
def VAEEncode(pixels: Image = Input(IMAGE), vae: Vae = Input(VAE)) -> Latent:
    """Encode pictures, first cropped (centred) to multiples of the VAE's downscale factor."""
    rows, columns = crop_offsets(pixels.height, pixels.width, vae.downscale)
    return Latent(samples=encode_pixels(vae, pixels.pixels[:, rows, columns, :3]))


@node(name="comfy.VAEEncodeForInpaint", outputs={"LATENT": LATENT}, category="comfy/latent")
def VAEEncodeForInpaint(
    pixels: Image = Input(IMAGE),
    vae: Vae = Input(VAE),
    mask: Mask = Input(MASK),
    grow_mask_by: int = Field(6, ge=0, le=64),
) -> Latent:
    """Encode for inpainting: the masked pixels (mask rounded) are set to grey before encoding, and the noise
    mask is the rounded mask grown by ``grow_mask_by`` pixels (a box of that size), so the sampler repaints a
    little beyond it. The encoded latents are also the masked-image latents an inpainting UNet reads."""
    height, width = pixels.height, pixels.width
    picture_mask = F.interpolate(mask.mask.reshape(-1, 1, *mask.mask.shape[-2:]).float(), size=(height, width),
                                 mode="bilinear")
    rows, columns = crop_offsets(height, width, vae.downscale)
    image = pixels.pixels[:, rows, columns, :3]
    picture_mask = picture_mask[:, :, rows, columns]
    if grow_mask_by == 0:
        grown = picture_mask
    else:
        kernel = torch.ones(1, 1, grow_mask_by, grow_mask_by)
        padding = math.ceil((grow_mask_by - 1) / 2)
        grown = F.conv2d(picture_mask.round(), kernel, padding=padding).clamp(0, 1)
    keep = (1.0 - picture_mask.round())[:, 0, :, :, None]
    greyed = (image - 0.5) * keep + 0.5
    samples = encode_pixels(vae, greyed)
    noise_mask = grown[:, :, :image.shape[1], :image.shape[2]].round()
    return Latent(samples=samples, noise_mask=noise_mask_at(noise_mask, tuple(samples.shape[-2:])).to(samples.device),
                  masked_image=samples)
