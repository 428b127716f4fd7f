"""comfy.EmptyLatentImage, LatentUpscale, LatentUpscaleBy, LatentFromBatch, RepeatLatentBatch, SetLatentNoiseMask."""
import pytest
import torch

from graphflow.errors import NodeInputError
from nodes.comfy.latent import (EmptyLatentImage, LatentFromBatch, LatentUpscale, LatentUpscaleBy, RepeatLatentBatch,
                                SetLatentNoiseMask)
from nodes.values import Latent, Mask
from tests.nodes.runctx import run_node


def ramp(batch=1, h=4, w=6) -> Latent:
    return Latent(samples=torch.arange(batch * 4 * h * w, dtype=torch.float32).reshape(batch, 4, h, w))


def test_empty_latent_is_comfyuis_4_channels_at_an_eighth():
    latent = run_node(EmptyLatentImage, width=520, height=64, batch_size=3)
    assert latent.samples.shape == (3, 4, 8, 65) and latent.samples.abs().sum() == 0
    assert run_node(EmptyLatentImage).samples.shape == (1, 4, 64, 64)  # ComfyUI's defaults: 512 x 512, 1


def test_latent_upscale_to_picture_pixels_and_the_aspect_rule():
    latent = ramp(h=4, w=6)
    assert run_node(LatentUpscale, samples=latent, width=96, height=64).samples.shape[-2:] == (8, 12)
    assert run_node(LatentUpscale, samples=latent, width=0, height=64).samples.shape[-2:] == (8, 12)  # 6/4 kept
    assert run_node(LatentUpscale, samples=latent, width=0, height=0) is latent
    nearest = run_node(LatentUpscale, samples=latent, width=96, height=64, upscale_method="nearest-exact").samples
    assert torch.equal(nearest[..., ::2, ::2], latent.samples)


def test_latent_upscale_centre_crop_keeps_the_middle():
    latent = ramp(h=8, w=16)  # 2:1 → 1:1 keeps columns 4..11
    cropped = run_node(LatentUpscale, samples=latent, width=64, height=64, crop="center", upscale_method="nearest-exact")
    assert torch.equal(cropped.samples, latent.samples[..., :, 4:12])


def test_latent_upscale_by_rounds_each_side_and_resizes_the_noise_mask():
    latent = ramp(h=4, w=6).replace(noise_mask=torch.ones(1, 1, 4, 6))
    out = run_node(LatentUpscaleBy, samples=latent, scale_by=1.5, upscale_method="bilinear")
    assert out.samples.shape[-2:] == (6, 9) and out.noise_mask.shape[-2:] == (6, 9)
    assert torch.allclose(out.noise_mask, torch.ones(1, 1, 6, 9))


def test_latent_from_batch_clamps_and_remembers_the_places():
    latent = ramp(batch=4)
    out = run_node(LatentFromBatch, samples=latent, batch_index=2, length=5)
    assert torch.equal(out.samples, latent.samples[2:4]) and out.batch_index == (2, 3)
    again = run_node(LatentFromBatch, samples=out, batch_index=1, length=1)
    assert again.batch_index == (3,)
    assert run_node(LatentFromBatch, samples=latent, batch_index=40).batch_index == (3,)


def test_repeat_latent_batch_repeats_and_continues_the_places():
    latent = ramp(batch=2).replace(noise_mask=torch.ones(1, 1, 4, 6))
    out = run_node(RepeatLatentBatch, samples=latent, amount=3)
    assert out.samples.shape[0] == 6 and torch.equal(out.samples[4:], latent.samples)
    assert out.noise_mask.shape[0] == 1 and out.batch_index is None  # one mask keeps serving the batch
    picked = run_node(LatentFromBatch, samples=ramp(batch=4), batch_index=1, length=2)
    assert run_node(RepeatLatentBatch, samples=picked, amount=2).batch_index == (1, 2, 3, 4)


def test_set_latent_noise_mask_brings_any_mask_to_latent_size_bilinearly():
    mask = torch.zeros(1, 32, 48)
    mask[:, :, 24:] = 1.0
    out = run_node(SetLatentNoiseMask, samples=ramp(h=4, w=6), mask=Mask(mask=mask))
    assert out.noise_mask.shape == (1, 1, 4, 6)
    assert out.noise_mask[0, 0, :, :3].max() == 0 and out.noise_mask[0, 0, :, 3:].min() == 1


def test_set_latent_noise_mask_refuses_a_noised_latent():
    class Noised:  # only the attribute the check reads
        sampler = "euler"

    latent = ramp().replace(schedule=Noised())
    with pytest.raises(NodeInputError) as caught:
        SetLatentNoiseMask(samples=latent, mask=Mask(mask=torch.ones(1, 4, 6)))
    assert caught.value.input == "samples"
