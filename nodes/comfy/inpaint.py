"""Inpainting UNets in comfy.KSampler (ComfyUI's ``concat_cond``) and ComfyUI's InpaintModelConditioning.

An inpainting UNet (4 latent channels + 1 mask + 4 masked-image channels = 9) reads, beside the noisy latent
scaled for the step, the mask and the masked picture's latents, in that order — what graphflow's Sample gives it
(``nodes.sampling.Inpainting.unet_extras``, which assembles them here too). ComfyUI takes them, per conditioning
entry, from:

- the entry's own, when InpaintModelConditioning set them (``concat_latent_image`` / ``concat_mask``);
- else the latent: its noise mask (SetLatentNoiseMask, VAEEncodeForInpaint) and the latent itself, which
  VAEEncodeForInpaint encoded from the greyed picture (a latent of graphflow's InpaintEncode gives its
  masked-image latents instead);
- with no mask at all: a mask of ones and ComfyUI's "blank" latent (its latent-space values of a zero picture).

Masks are brought to the latent's size bilinearly and rounded; latents bilinearly (centre crop when the aspect
differs); a batch of one serves every image."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import Field

from graphflow.errors import NodeInputError
from graphflow.node import Input, node

from ..sampling import Inpainting
from ..vae import encode_pixels
from ..values import CONDITIONING, IMAGE, LATENT, MASK, VAE, Conditioning, Image, Latent, Mask, Vae
from .latent import noise_mask_at
from .resize import common_upscale
from .vae import crop_offsets

BLANK_LATENT = (0.8223, -0.6876, 0.6364, 0.1380)  # ComfyUI's blank_inpaint_image_like, per latent channel


def concat_channels(model_channels: int, latent_channels: int, name: str = "model") -> int:
    """How many channels an inpainting UNet reads beside the latent: 0 for a plain UNet, 1 + latent channels
    for an inpainting one; anything else is refused."""
    extra = model_channels - latent_channels
    if extra not in (0, 1 + latent_channels):
        raise NodeInputError(name, f"the UNet takes {model_channels} input channels, the latent has {latent_channels}",
                             f"a {latent_channels}-channel UNet, or a {2 * latent_channels + 1}-channel inpainting UNet",
                             f"{model_channels} channels")
    return extra


def _fitted(tensor: "torch.Tensor", shape: tuple[int, ...], what: str) -> "torch.Tensor":
    """``tensor`` (n, c, h', w') at the latent's (B, ·, h, w): resized bilinearly, one row serving the batch."""
    batch, height, width = shape[0], shape[-2], shape[-1]
    tensor = tensor.float()
    if tuple(tensor.shape[-2:]) != (height, width):
        tensor = common_upscale(tensor, width, height, "bilinear", "center")
    if tensor.shape[0] not in (1, batch):
        raise NodeInputError("latent_image", f"the {what} has {tensor.shape[0]} images, the latent {batch}",
                             f"1 or {batch}", tensor.shape[0])
    return tensor


@dataclass(frozen=True)
class InpaintConcat:
    """The latent's defaults for what an inpainting UNet reads (see the module docstring): ``masked`` (1 or B,
    C, h, w) and ``mask`` (1 or B, 1, h, w) or None, for the latent's ``samples`` (B, C, h, w)."""

    samples: "torch.Tensor"
    masked: "torch.Tensor"
    mask: "torch.Tensor | None"

    @classmethod
    def of(cls, latent: Latent) -> "InpaintConcat":
        masked = latent.masked_image if latent.masked_image is not None else latent.samples
        return cls(latent.samples, masked, latent.noise_mask)

    def for_entry(self, entry) -> "torch.Tensor":
        """[mask, masked-image latents] (B, 1 + C, h, w) for a conditioning entry (its own, else the latent's)."""
        shape = tuple(self.samples.shape)
        own_mask = getattr(entry, "inpaint_mask", None)
        mask = own_mask if own_mask is not None else self.mask
        if mask is None:
            blank = BLANK_LATENT[:shape[1]] + (1.0,) * max(0, shape[1] - len(BLANK_LATENT))
            image = torch.tensor(blank).reshape(1, -1, 1, 1).expand(1, -1, *shape[-2:])
            mask = torch.ones(1, 1, *shape[-2:])
        else:
            own_latent = getattr(entry, "inpaint_latent", None)
            image = _fitted(own_latent if own_latent is not None else self.masked, shape, "masked-image latent")
            mask = _fitted(mask, shape, "inpainting mask").round()
        if image.shape[1] != shape[1]:
            raise NodeInputError("latent_image", f"the masked-image latents have {image.shape[1]} channels, the latent "
                                 f"{shape[1]}", shape[1], int(image.shape[1]))
        device = self.samples.device
        inpainting = Inpainting(mask.to(device), self.samples, noise=None, masked_image=image.to(device),
                                concatenated=True)
        return torch.cat(inpainting.unet_extras(shape[0]), dim=1)


@node(name="comfy.InpaintModelConditioning",
      outputs={"positive": CONDITIONING, "negative": CONDITIONING, "latent": LATENT}, category="comfy/conditioning")
def InpaintModelConditioning(
    positive: Conditioning = Input(CONDITIONING),
    negative: Conditioning = Input(CONDITIONING),
    vae: Vae = Input(VAE),
    pixels: Image = Input(IMAGE),
    mask: Mask = Input(MASK),
    noise_mask: bool = Field(True, description="also set the mask as the latent's noise mask, so sampling changes "
                             "only the masked part"),
) -> tuple[Conditioning, Conditioning, Latent]:
    """Conditioning for an inpainting UNet: every entry of both conditionings carries the greyed-out picture's
    latents (masked pixels set to 0.5, mask rounded) and the mask; the latent is the whole picture's."""
    rows, columns = crop_offsets(pixels.height, pixels.width, vae.downscale)
    picture_mask = noise_mask_at(mask.mask, (pixels.height, pixels.width))[:, :, rows, columns]
    image = pixels.pixels[:, rows, columns, :3]
    keep = (1.0 - picture_mask.round())[:, 0, :, :, None]
    masked_latent = encode_pixels(vae, (image - 0.5) * keep + 0.5)
    latent_mask = noise_mask_at(picture_mask, tuple(masked_latent.shape[-2:])).to(masked_latent.device)
    samples = encode_pixels(vae, image)

    def with_inpainting(conditioning: Conditioning) -> Conditioning:
        first, *rest = [entry.replace(inpaint_latent=masked_latent, inpaint_mask=latent_mask)
                        for entry in conditioning.entries]
        return first.replace(also=tuple(rest))

    latent = Latent(samples=samples, noise_mask=latent_mask if noise_mask else None)
    return with_inpainting(positive), with_inpainting(negative), latent
