"""Between pixels and latents: the VAE's decoder and encoder, scaled the way diffusers' pipelines scale them."""
from __future__ import annotations

import torch

from graphflow.errors import NodeInputError
from graphflow.node import Input, node

from .values import IMAGE, LATENT, VAE, Image, Latent, Vae


@node(outputs={"image": IMAGE}, category="latent")
def VAEDecode(vae: Vae = Input(VAE), latent: Latent = Input(LATENT)) -> Image:
    """Decode latents to an image: divide by the VAE's scaling factor, decode, map [-1, 1] to [0, 1].

    The same float pixels diffusers' pipelines return with ``output_type="pt"`` (before any uint8 rounding),
    channels last."""
    model = vae.vae
    latents = latent.samples.to(device=model.device, dtype=model.dtype)
    with torch.no_grad():
        decoded = model.decode(latents / vae.scaling_factor, return_dict=False)[0]
    pixels = (decoded * 0.5 + 0.5).clamp(0, 1)  # VaeImageProcessor.denormalize
    return Image(pixels=pixels.permute(0, 2, 3, 1).float().cpu())


@node(outputs={"latent": LATENT}, category="latent")
def VAEEncode(vae: Vae = Input(VAE), image: Image = Input(IMAGE)) -> Latent:
    """Encode an image to latents, deterministically: the mode (mean) of the VAE's latent distribution.

    Pipelines sample the distribution with their generator instead; the mode keeps an encoded image the
    same on every run so it caches, and differs from a sample by the VAE's tiny posterior noise. The width
    and height must be multiples of the VAE's downscale factor (8 for SD)."""
    factor = vae.downscale
    for name, side in (("width", image.width), ("height", image.height)):
        if side % factor:
            raise NodeInputError("image", f"image {name} must be a multiple of the VAE's downscale factor {factor} (resize it with ImageScale)", f"a multiple of {factor}", side)
    model = vae.vae
    pixels = image.pixels.permute(0, 3, 1, 2).to(device=model.device, dtype=model.dtype)
    with torch.no_grad():
        latents = model.encode(2.0 * pixels - 1.0).latent_dist.mode()  # VaeImageProcessor.normalize, then encode
    return Latent(samples=vae.scaling_factor * latents)
