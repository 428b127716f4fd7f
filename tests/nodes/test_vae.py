"""VAEDecode and VAEEncode: diffusers' latent scaling and pixel ranges, deterministic encoding."""
import pytest
import torch
from diffusers.image_processor import VaeImageProcessor

from graphflow.errors import NodeInputError
from nodes.vae import VAEDecode, VAEEncode
from nodes.values import Image, Latent
from tests.nodes.runctx import run_node
from tests.nodes.stage_helpers import channels_last


def random_latent(batch=2, seed=0):
    return Latent(samples=torch.randn(batch, 4, 16, 24, generator=torch.Generator().manual_seed(seed)))


def gradient_image(batch=1, height=32, width=48):
    return Image(pixels=torch.linspace(0, 1, batch * height * width * 3).reshape(batch, height, width, 3))


def test_decode_is_the_pipelines_decode_and_postprocess(sd_vae):
    latent = random_latent()
    image = run_node(VAEDecode, vae=sd_vae, latent=latent)
    with torch.no_grad():
        decoded = sd_vae.vae.decode(latent.samples / sd_vae.vae.config.scaling_factor, return_dict=False)[0]
    expected = VaeImageProcessor(vae_scale_factor=2).postprocess(decoded, output_type="pt")
    assert image.pixels.shape == (2, 32, 48, 3)  # channels last, twice the latent size for the tiny VAE
    assert image.pixels.dtype == torch.float32
    assert torch.equal(image.pixels, channels_last(expected))
    assert image.pixels.min() >= 0 and image.pixels.max() <= 1


def test_encode_is_the_scaled_mode_of_the_latent_distribution(sd_vae):
    image = gradient_image()
    latent = run_node(VAEEncode, vae=sd_vae, image=image)
    normalized = VaeImageProcessor(vae_scale_factor=2).normalize(image.pixels.permute(0, 3, 1, 2))
    with torch.no_grad():
        mode = sd_vae.vae.encode(normalized).latent_dist.mode()
    assert latent.samples.shape == (1, 4, 16, 24)
    assert torch.equal(latent.samples, mode * sd_vae.vae.config.scaling_factor)
    assert latent.schedule is None


def test_encode_is_deterministic(sd_vae):
    image = gradient_image(batch=2)
    assert torch.equal(run_node(VAEEncode, vae=sd_vae, image=image).samples, run_node(VAEEncode, vae=sd_vae, image=image).samples)


def test_decode_is_deterministic(sd_vae):
    latent = random_latent(seed=3)
    assert torch.equal(run_node(VAEDecode, vae=sd_vae, latent=latent).pixels, run_node(VAEDecode, vae=sd_vae, latent=latent).pixels)


def test_encode_needs_sizes_that_fit_the_downscale_factor(sd_vae):
    with pytest.raises(NodeInputError) as error:
        run_node(VAEEncode, vae=sd_vae, image=gradient_image(height=33))
    assert error.value.input == "image" and error.value.received == 33


def test_vae_nodes_leave_inputs_untouched(sd_vae):
    latent, image = random_latent(), gradient_image()
    before = [v.__graphflow_digest__() for v in (sd_vae, latent, image)]
    run_node(VAEDecode, vae=sd_vae, latent=latent)
    run_node(VAEEncode, vae=sd_vae, image=image)
    assert [v.__graphflow_digest__() for v in (sd_vae, latent, image)] == before
