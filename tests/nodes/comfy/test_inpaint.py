"""Inpainting UNets in comfy.KSampler and comfy.InpaintModelConditioning, as ComfyUI's concat_cond feeds them:
the UNet's input is [the scaled latent, the rounded mask, the masked picture's latents], taken from the
conditioning entry when InpaintModelConditioning set them, else from the latent (its noise mask and itself), else
a mask of ones and ComfyUI's blank latent; cut to each entry's area. What the UNet reads is recorded with a
forward hook on the built-in 9-channel tiny model."""
import json
import math
from pathlib import Path

import pytest
import torch

from graphflow import Engine, Settings
from graphflow.documents import read_document
from graphflow.errors import NodeInputError
from graphflow.registry import default_registry
from nodes.builtin_models import build_tiny_components
from nodes.comfy.conditioning import ConditioningCombine, ConditioningSetArea
from nodes.comfy.inpaint import BLANK_LATENT, InpaintModelConditioning
from nodes.comfy.ksampler import sample_latent
from nodes.values import Conditioning, Image, Latent, Mask, Model, Vae
from nodes.vae import encode_pixels

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def parts():
    return build_tiny_components(in_channels=9)


@pytest.fixture(scope="module")
def model(parts):
    return Model(parts["unet"], dict(parts["scheduler"].config), "sd1", "epsilon", "tiny-sd-inpainting")


@pytest.fixture(scope="module")
def vae(parts):
    return Vae(parts["vae"], "tiny-sd-inpainting")


def prompt(seed=0):
    return Conditioning(embeds=torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(seed)))


def unet_inputs(model, run):
    """Every sample the UNet was called with while ``run()`` ran, and run's result."""
    seen = []
    handle = model.unet.register_forward_pre_hook(lambda _module, args: seen.append(args[0].detach().clone()))
    try:
        result = run()
    finally:
        handle.remove()
    return seen, result


def soft_mask():
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:6, 1:5] = 1.0
    mask[..., 0, :] = 0.4  # rounds to 0
    mask[..., 7, :] = 0.6  # rounds to 1
    return mask


def test_the_unet_reads_the_rounded_noise_mask_and_the_latent_itself(model, stage_ctx):
    ctx, _ = stage_ctx
    latent = Latent(torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3)), noise_mask=soft_mask())
    seen, out = unet_inputs(model, lambda: sample_latent(model, 1, 2, 6.0, "euler", "normal", prompt(1), prompt(2),
                                                         latent, ctx))
    assert len(seen) == 2 and seen[0].shape == (2, 9, 8, 8)  # both sides of CFG in one batch, each step
    for sample in seen:
        assert torch.equal(sample[:, 4:5], soft_mask().round().expand(2, -1, -1, -1))
        assert torch.allclose(sample[:, 5:], latent.samples.expand(2, -1, -1, -1))
    keep = soft_mask().expand(1, 4, -1, -1) == 0
    assert torch.allclose(out.samples[keep], latent.samples[keep], atol=1e-5)  # KSamplerX0Inpaint keeps the rest


def test_without_a_mask_the_unet_reads_ones_and_comfyuis_blank_latent(model, stage_ctx):
    ctx, _ = stage_ctx
    seen, _ = unet_inputs(model, lambda: sample_latent(model, 1, 1, 1.0, "euler", "normal", prompt(1), prompt(2),
                                                       Latent(torch.zeros(1, 4, 6, 6)), ctx))
    [sample] = seen
    assert sample.shape == (1, 9, 6, 6) and torch.all(sample[:, 4] == 1.0)
    assert [float(v) for v in sample[0, 5:, 0, 0]] == pytest.approx(BLANK_LATENT)
    assert torch.all(sample[0, 5:] == sample[0, 5:, :1, :1])


def test_the_first_channels_are_the_latent_scaled_for_the_step(model, stage_ctx):
    ctx, _ = stage_ctx
    latent = Latent(torch.zeros(1, 4, 8, 8))
    seen, _ = unet_inputs(model, lambda: sample_latent(model, 4, 1, 1.0, "euler", "normal", prompt(1), prompt(2),
                                                       latent, ctx))
    from nodes.ksigmas import DiscreteSigmas, initial_noise, ksampler_sigmas

    sigma = ksampler_sigmas(DiscreteSigmas.from_config(model.scheduler_config), "normal", "euler", 1)[0]
    x = initial_noise((1, 4, 8, 8), 4) * torch.sqrt(1.0 + sigma ** 2)  # the start at the highest sigma
    assert torch.allclose(seen[0][:, :4], x / math.sqrt(float(sigma) ** 2 + 1.0), atol=1e-5)


def picture_and_mask():
    pixels = torch.rand(1, 16, 16, 3, generator=torch.Generator().manual_seed(5))
    mask = torch.zeros(1, 16, 16)
    mask[:, 4:12, 6:14] = 1.0
    return Image(pixels), Mask(mask)


def test_inpaint_model_conditioning_carries_the_greyed_picture_and_the_mask(vae):
    image, mask = picture_and_mask()
    positive, negative, latent = InpaintModelConditioning(ConditioningCombine(prompt(1), prompt(3)), prompt(2), vae,
                                                          image, mask, True)
    greyed = image.pixels.clone()
    greyed[:, 4:12, 6:14, :] = 0.5
    assert torch.equal(latent.samples, encode_pixels(vae, image.pixels))
    expected_mask = torch.nn.functional.interpolate(mask.mask[:, None], size=(8, 8), mode="bilinear")
    for entry in (*positive.entries, *negative.entries):
        assert torch.allclose(entry.inpaint_latent, encode_pixels(vae, greyed), atol=1e-6)
        assert torch.allclose(entry.inpaint_mask, expected_mask)
    assert len(positive.entries) == 2 and torch.equal(latent.noise_mask, positive.inpaint_mask)
    assert InpaintModelConditioning(prompt(1), prompt(2), vae, image, mask, False)[2].noise_mask is None


def test_the_entrys_own_inpainting_inputs_win_over_the_latents(model, vae, stage_ctx):
    ctx, _ = stage_ctx
    image, mask = picture_and_mask()
    positive, negative, latent = InpaintModelConditioning(prompt(1), prompt(2), vae, image, mask, False)
    seen, out = unet_inputs(model, lambda: sample_latent(model, 1, 1, 6.0, "euler", "normal", positive, negative,
                                                         latent, ctx))
    [sample] = seen
    assert torch.equal(sample[:, 4:5], positive.inpaint_mask.round().expand(2, -1, -1, -1))
    assert torch.allclose(sample[:, 5:], positive.inpaint_latent.expand(2, -1, -1, -1))
    assert not torch.allclose(sample[:, 5:], latent.samples.expand(2, -1, -1, -1), atol=1e-3)
    assert out.noise_mask is None  # noise_mask False: the whole latent is sampled


def test_an_areas_entry_reads_its_crop_of_the_mask_and_masked_image(model, stage_ctx):
    ctx, _ = stage_ctx
    latent = Latent(torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3)), noise_mask=soft_mask())
    area = ConditioningSetArea(prompt(1), width=64, height=64, x=16, y=24, strength=1.0)  # clamped to the latent
    positive = ConditioningCombine(prompt(0), area)
    seen, _ = unet_inputs(model, lambda: sample_latent(model, 1, 1, 1.0, "euler", "normal", positive, prompt(2),
                                                       latent, ctx))
    crops = [s for s in seen if s.shape[-2:] == (8, 8)]
    assert crops and crops[0].shape[0] == 1
    [cropped] = [s for s in seen if s.shape[-2:] != (8, 8)]
    h, w = cropped.shape[-2:]
    top, left = 24 // 8, 16 // 8
    assert torch.equal(cropped[:, 4:5], soft_mask().round()[..., top:top + h, left:left + w])
    assert torch.allclose(cropped[:, 5:], latent.samples[..., top:top + h, left:left + w])


def test_a_unet_that_is_neither_plain_nor_inpainting_for_the_latent_is_refused(model, stage_ctx):
    ctx, _ = stage_ctx
    with pytest.raises(NodeInputError) as error:
        sample_latent(model, 1, 1, 1.0, "euler", "normal", prompt(1), prompt(2), Latent(torch.zeros(1, 3, 8, 8)), ctx)
    assert error.value.input == "model" and "9 input channels" in str(error.value) and "7-channel" in error.value.expected
    bad_batch = Latent(torch.zeros(2, 4, 8, 8), noise_mask=torch.ones(1, 1, 8, 8), masked_image=torch.zeros(3, 4, 8, 8))
    with pytest.raises(NodeInputError) as error:
        sample_latent(model, 1, 1, 1.0, "euler", "normal", prompt(1), prompt(2), bad_batch, ctx)
    assert error.value.input == "latent_image" and "3 images" in str(error.value)


def test_comfyuis_inpaint_workflow_runs_on_the_builtin_inpainting_model(tmp_path):
    document = json.loads((ROOT / "workflows" / "comfyui" / "inpaint.api.json").read_text())
    document["4"]["inputs"]["ckpt_name"] = "tiny-sd-inpainting"
    document["3"]["inputs"]["steps"] = 3
    engine = Engine(settings=Settings(models_dir=tmp_path / "models", input_dir=ROOT / "workflows" / "assets",
                                      output_dir=tmp_path / "out"))
    values = engine.run(read_document(document, "inpaint", default_registry())).values
    start, sampled = values["12"]["LATENT"], values["3"]["LATENT"]
    assert values["4"]["MODEL"].in_channels == 9 and torch.isfinite(sampled.samples).all()
    keep = (start.noise_mask == 0).expand_as(start.samples)
    assert keep.any() and (~keep).any()
    assert torch.allclose(sampled.samples[keep], start.samples[keep], atol=1e-5)
    assert not torch.allclose(sampled.samples[~keep], start.samples[~keep], atol=1e-2)
    assert values["8"]["IMAGE"].pixels.shape[1:3] == (64, 64)


def test_an_api_prompt_with_inpaint_model_conditioning_runs(tmp_path):
    document = json.loads((ROOT / "workflows" / "comfyui" / "inpaint.api.json").read_text())
    document["4"]["inputs"]["ckpt_name"] = "tiny-sd-inpainting"
    document["3"]["inputs"].update(steps=3, positive=["12", 0], negative=["12", 1], latent_image=["12", 2])
    document["12"] = {"class_type": "InpaintModelConditioning", "inputs": {
        "positive": ["6", 0], "negative": ["7", 0], "vae": ["4", 2], "pixels": ["10", 0], "mask": ["11", 0],
        "noise_mask": True}}
    engine = Engine(settings=Settings(models_dir=tmp_path / "models", input_dir=ROOT / "workflows" / "assets",
                                      output_dir=tmp_path / "out"))
    values = engine.run(read_document(document, "inpaint", default_registry())).values
    positive, start, sampled = values["12"]["positive"], values["12"]["latent"], values["3"]["LATENT"]
    assert positive.inpaint_latent is not None and positive.inpaint_mask.shape[-2:] == start.samples.shape[-2:]
    keep = (start.noise_mask == 0).expand_as(start.samples)
    assert torch.allclose(sampled.samples[keep], start.samples[keep], atol=1e-5)
    assert not torch.allclose(sampled.samples[~keep], start.samples[~keep], atol=1e-2)


def test_a_controlnet_steers_an_inpainting_unet_on_the_latent_channels(tmp_path):
    document = json.loads((ROOT / "workflows" / "comfyui" / "inpaint.api.json").read_text())
    document["4"]["inputs"]["ckpt_name"] = "tiny-sd-inpainting"
    document["3"]["inputs"].update(steps=2, positive=["14", 0])
    document["13"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "tiny-sd-controlnet"}}
    document["14"] = {"class_type": "ControlNetApply", "inputs": {
        "conditioning": ["6", 0], "control_net": ["13", 0], "image": ["10", 0], "strength": 1.0}}
    engine = Engine(settings=Settings(models_dir=tmp_path / "models", input_dir=ROOT / "workflows" / "assets",
                                      output_dir=tmp_path / "out"))

    def sampled(strength):
        document["14"]["inputs"]["strength"] = strength
        return engine.run(read_document(document, "inpaint", default_registry())).values["3"]["LATENT"].samples

    steered, plain = sampled(1.0), sampled(0.0)
    assert torch.isfinite(steered).all() and not torch.allclose(steered, plain, atol=1e-4)
