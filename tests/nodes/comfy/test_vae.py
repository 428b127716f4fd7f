"""comfy.VAEDecode, VAEEncode, VAEEncodeForInpaint on the built-in tiny model (VAE downscale factor 2)."""
import torch

from nodes.comfy.vae import VAEDecode, VAEEncode, VAEEncodeForInpaint
from nodes.values import Image, Mask
from nodes.vae import decode_latents, encode_pixels
from tests.nodes.runctx import run_node


def picture(h=16, w=16):
    return Image(pixels=torch.rand(1, h, w, 3, generator=torch.Generator().manual_seed(3)))


def test_encode_is_graphflows_deterministic_encoding_and_decode_inverts_its_size(sd_vae):
    image = picture()
    latent = run_node(VAEEncode, pixels=image, vae=sd_vae)
    assert torch.equal(latent.samples, encode_pixels(sd_vae, image.pixels))
    decoded = run_node(VAEDecode, samples=latent, vae=sd_vae)
    assert decoded.pixels.shape == (1, 16, 16, 3) and torch.equal(decoded.pixels, decode_latents(sd_vae, latent.samples))


def test_encode_crops_odd_sizes_to_the_vae_factor_centred(sd_vae):
    image = picture(17, 15)
    latent = run_node(VAEEncode, pixels=image, vae=sd_vae)
    assert torch.equal(latent.samples, encode_pixels(sd_vae, image.pixels[:, 0:16, 0:14]))


def test_encode_for_inpaint_greys_the_masked_pixels_and_grows_the_noise_mask(sd_vae):
    image = picture()
    mask = torch.zeros(1, 16, 16)
    mask[:, 6:10, 6:10] = 1.0
    latent = run_node(VAEEncodeForInpaint, pixels=image, vae=sd_vae, mask=Mask(mask=mask), grow_mask_by=0)
    greyed = image.pixels.clone()
    greyed[:, 6:10, 6:10] = 0.5
    assert torch.allclose(latent.samples, encode_pixels(sd_vae, greyed), atol=1e-6)
    assert latent.masked_image is latent.samples
    assert latent.noise_mask.shape == (1, 1, 8, 8)
    assert latent.noise_mask[0, 0, 3:5, 3:5].min() == 1 and latent.noise_mask[0, 0, :2].max() == 0
    grown = run_node(VAEEncodeForInpaint, pixels=image, vae=sd_vae, mask=Mask(mask=mask), grow_mask_by=6)
    assert grown.noise_mask.sum() > latent.noise_mask.sum()
    assert grown.noise_mask[0, 0, 0, 0] == 0  # a 6-pixel box does not reach the corner
