"""EmptyLatent, LatentUpscale and RepeatLatent."""
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from graphflow.errors import NodeInputError, WorkflowInvalid
from graphflow.node import spec_of
from graphflow.registry import Registry
from graphflow.validate import validate
from graphflow.workflow import parse
from nodes.latent import EmptyLatent, LatentChannels, LatentUpscale, RepeatLatent
from nodes.sampling import AddNoise, Schedule
from nodes.values import Latent
from tests.nodes.runctx import run_node


def test_empty_latent_uses_the_vae_downscale_factor(sd_vae):
    latent = run_node(EmptyLatent, width=96, height=64, batch_size=3, vae=sd_vae)  # the tiny VAE halves each side
    assert latent.samples.shape == (3, 4, 32, 48)
    assert not torch.any(latent.samples)
    assert latent.schedule is None and latent.noise_mask is None


def test_empty_latent_needs_the_vae_that_gives_its_scale():
    # factors differ (8 for SD, 4 for toy-shapes, 2 for the tiny model): no VAE is refused before running, not guessed
    document = {"graphflow": 1, "nodes": {"empty": {"type": "EmptyLatent", "inputs": {"width": 64, "height": 64}}}}
    with pytest.raises(WorkflowInvalid) as error:
        validate(parse(document), Registry([spec_of(EmptyLatent)]))
    assert [(i.node, i.input, i.code) for i in error.value.issues if i.node] == [("empty", "vae", "missing_input")]


@pytest.mark.parametrize("bad", [{"width": 100}, {"height": 60}, {"width": 0}, {"width": 8200}, {"batch_size": 0},
                                 {"batch_size": 65}, {"width": 64.0}])
def test_empty_latent_rejects_bad_sizes(bad):
    with pytest.raises(ValidationError):
        spec_of(EmptyLatent).literals.model_validate(bad)


def noisy_latent(shape=(2, 4, 8, 12), seed=0):
    return Latent(samples=torch.randn(shape, generator=torch.Generator().manual_seed(seed)))


def test_upscale_by_factor(sd_vae):
    latent = noisy_latent()
    up = run_node(LatentUpscale, latent=latent, scale_by=2.0, vae=sd_vae)
    assert up.samples.shape == (2, 4, 16, 24)
    assert torch.equal(up.samples, F.interpolate(latent.samples, size=(16, 24), mode="nearest-exact"))


def test_upscale_to_width_keeps_aspect_ratio(sd_vae):
    # 12 × 8 latent = 24 × 16 pixels with the tiny VAE; 48 pixels wide → 24 × 16 latent.
    up = run_node(LatentUpscale, latent=noisy_latent(), width=48, vae=sd_vae)
    assert up.samples.shape[-2:] == (16, 24)
    both = run_node(LatentUpscale, latent=noisy_latent(), width=64, height=32, vae=sd_vae)
    assert both.samples.shape[-2:] == (16, 32)


def test_upscale_to_a_pixel_size_without_a_vae_names_the_vae_input():
    with pytest.raises(NodeInputError) as error:
        run_node(LatentUpscale, latent=noisy_latent(), height=128)
    assert error.value.input == "vae" and "image pixels" in error.value.message
    assert run_node(LatentUpscale, latent=noisy_latent(), scale_by=2.0).samples.shape[-2:] == (16, 24)  # no pixels: no VAE needed


@pytest.mark.parametrize("method,mode,antialias", [
    ("bilinear", "bilinear", False), ("bicubic", "bicubic", False),
    ("bilinear-antialiased", "bilinear", True), ("bicubic-antialiased", "bicubic", True),
])
def test_upscale_methods_are_torch_interpolation(method, mode, antialias):
    latent = noisy_latent()
    out = run_node(LatentUpscale, latent=latent, method=method, scale_by=0.5)  # shrinking shows the antialias
    expected = F.interpolate(latent.samples, size=(4, 6), mode=mode, align_corners=False, antialias=antialias)
    assert torch.equal(out.samples, expected)


def test_antialiasing_changes_a_downscale():
    latent = noisy_latent()
    plain = run_node(LatentUpscale, latent=latent, method="bilinear", scale_by=0.5)
    smooth = run_node(LatentUpscale, latent=latent, method="bilinear-antialiased", scale_by=0.5)
    assert not torch.allclose(plain.samples, smooth.samples)


def test_noise_mask_is_resized_and_stays_in_range():
    mask = torch.zeros(2, 1, 8, 12)
    mask[:, :, 2:6, 3:9] = 1.0
    latent = Latent(samples=noisy_latent().samples, noise_mask=mask)
    up = run_node(LatentUpscale, latent=latent, method="bicubic", scale_by=2.0)
    assert up.noise_mask.shape == (2, 1, 16, 24)
    assert up.noise_mask.min() >= 0 and up.noise_mask.max() <= 1
    assert up.noise_mask[0, 0, 8, 12] == 1 and up.noise_mask[0, 0, 0, 0] == 0


def test_upscaled_latent_is_clean_even_from_a_noised_one(sd_model):
    schedule = run_node(Schedule, model=sd_model, steps=4)
    noised = run_node(AddNoise, latent=noisy_latent(), schedule=schedule, seed=1)
    up = run_node(LatentUpscale, latent=noised, scale_by=1.5)
    assert up.schedule is None and up.noise is None and up.rng_state is None and up.clean is None


def test_upscale_bounds_are_validated():
    literals = spec_of(LatentUpscale).literals
    for bad in ({"scale_by": 0.0}, {"scale_by": 9.0}, {"width": -8}, {"width": 100}, {"method": "lanczos"}):
        with pytest.raises(ValidationError):
            literals.model_validate(bad)


def test_size_must_fit_the_vae_factor():
    from nodes.values import Vae

    class Config:  # a VAE with 5 blocks downscales by 16, which 8-pixel steps do not always fit
        block_out_channels = (1, 1, 1, 1, 1)
        latent_channels = 4
        scaling_factor = 1.0

    module = torch.nn.Module()
    module.config = Config()
    with pytest.raises(NodeInputError) as error:
        run_node(EmptyLatent, width=72, height=64, vae=Vae(module, name="odd"))
    assert error.value.input == "width"


def test_latent_nodes_leave_inputs_untouched(sd_vae):
    latent = Latent(samples=noisy_latent().samples, noise_mask=torch.rand(2, 1, 8, 12))
    before, vae_before = latent.__graphflow_digest__(), sd_vae.__graphflow_digest__()
    run_node(LatentUpscale, latent=latent, method="bicubic-antialiased", scale_by=0.7, vae=sd_vae)
    run_node(EmptyLatent, width=64, height=64, vae=sd_vae)
    assert latent.__graphflow_digest__() == before
    assert sd_vae.__graphflow_digest__() == vae_before


def test_repeat_latent_repeats_the_batch_and_its_per_image_masks():
    samples = torch.arange(2 * 4 * 2 * 2, dtype=torch.float32).view(2, 4, 2, 2)
    per_image_mask = torch.stack([torch.zeros(1, 2, 2), torch.ones(1, 2, 2)])
    out = run_node(RepeatLatent, latent=Latent(samples=samples, noise_mask=per_image_mask), amount=3)
    assert out.batch_size == 6
    assert torch.equal(out.samples, torch.cat([samples] * 3))  # the batch one after the other: 0 1 0 1 0 1
    assert torch.equal(out.noise_mask, torch.cat([per_image_mask] * 3))
    shared_mask = torch.ones(1, 1, 2, 2)
    assert run_node(RepeatLatent, latent=Latent(samples=samples, noise_mask=shared_mask), amount=3).noise_mask is shared_mask


def test_repeat_latent_refuses_a_noised_latent(sd_model):
    schedule = run_node(Schedule, model=sd_model, steps=4)
    noised = run_node(AddNoise, latent=Latent(samples=torch.zeros(1, 4, 8, 8)), schedule=schedule, seed=0)
    with pytest.raises(NodeInputError, match="before AddNoise"):
        run_node(RepeatLatent, latent=noised, amount=2)


def test_latent_channels_grid_normalised_per_channel():
    samples = torch.zeros(2, 4, 3, 5)
    for c in range(4):
        samples[:, c] = torch.linspace(-c - 1, 10 * c + 1, 15).view(3, 5)
    image = run_node(LatentChannels, latent=Latent(samples=samples))
    assert image.pixels.shape == (2, 6, 10, 3)
    for row, col in ((0, 0), (0, 1), (1, 0), (1, 1)):
        cell = image.pixels[0, row * 3:(row + 1) * 3, col * 5:(col + 1) * 5, 0]
        assert cell.min() == 0 and cell.max() == 1  # each channel stretched on its own
    assert torch.equal(image.pixels[..., 0], image.pixels[..., 2])  # grey
