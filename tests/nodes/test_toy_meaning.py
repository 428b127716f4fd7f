"""Checks of meaning for the built-in ``toy-shapes`` model: the picture follows the prompt.

Every check generates over the fixed seeds 0..9 and reads colour and shape back from pixels with
``training.measure.classify``. Generation sits behind ``generate`` so the same checks can later run
through graphflow workflows instead of diffusers pipelines.
"""
from __future__ import annotations

import functools
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before anything imports huggingface_hub

import pytest
import torch

from nodes.builtin_models import PACKAGE_MODELS
from training.measure import classify
from training.shapes import draw_shape

TOY = PACKAGE_MODELS / "toy-shapes"
SEEDS = range(10)
STEPS = 20
CFG = 7.0
PAIRS = [("red", "circle"), ("blue", "square"), ("yellow", "triangle")]

pytestmark = pytest.mark.skipif(not (TOY / "model_index.json").exists(), reason="toy-shapes weights not built")


@functools.lru_cache(maxsize=1)
def _pipelines():
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

    txt2img = StableDiffusionPipeline.from_pretrained(TOY, local_files_only=True)
    img2img = StableDiffusionImg2ImgPipeline(**txt2img.components)
    for pipe in (txt2img, img2img):
        pipe.set_progress_bar_config(disable=True)
    return txt2img, img2img


def generate(prompt, negative_prompt="", seed=0, guidance_scale=CFG, steps=STEPS, image=None, strength=None, latent=False):
    """One picture: txt2img at 64x64, or img2img from ``image`` (a PIL image or SD latents (1,4,h,w)).

    ``latent=True`` returns the denoised latents instead of a PIL image (for the hires fix)."""
    txt2img, img2img = _pipelines()
    common = dict(
        prompt=prompt,
        negative_prompt=negative_prompt or None,
        guidance_scale=guidance_scale,
        num_inference_steps=steps,
        generator=torch.Generator("cpu").manual_seed(seed),
        output_type="latent" if latent else "pil",
    )
    with torch.no_grad():
        if image is None:
            result = txt2img(height=64, width=64, **common)
        else:
            result = img2img(image=image, strength=strength, **common)
    return result.images if latent else result.images[0]


@functools.lru_cache(maxsize=None)
def measured(prompt, negative_prompt="", guidance_scale=CFG):
    """(colour, shape) of the txt2img picture for each seed (cached: several checks share runs)."""
    return [classify(generate(prompt, negative_prompt, seed, guidance_scale)) for seed in SEEDS]


def hires_fix(prompt, seed):
    """txt2img at 64, latents upscaled x2, then img2img at strength 0.5 (so 128x128)."""
    latents = generate(prompt, seed=seed, latent=True)
    upscaled = torch.nn.functional.interpolate(latents, scale_factor=2, mode="nearest-exact")
    return generate(prompt, seed=seed, image=upscaled, strength=0.5)


def test_folder_is_a_standard_sd_pipeline_under_20_mb():
    size = sum(f.stat().st_size for f in TOY.rglob("*") if f.is_file())
    assert size < 20_000_000
    index = json.loads((TOY / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"] and index["vae"] == ["diffusers", "AutoencoderKL"]
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"]
    text_config = json.loads((TOY / "text_encoder" / "config.json").read_text())
    assert (text_config["bos_token_id"], text_config["eos_token_id"], text_config["pad_token_id"]) == (49406, 49407, 49407)
    assert list(TOY.rglob("*.safetensors")) and not list(TOY.rglob("*.bin"))
    assert generate("a red circle", seed=0, steps=2).size == (64, 64)


@pytest.mark.parametrize("colour, shape", PAIRS)
def test_prompt_draws_the_named_colour_and_shape(colour, shape):
    results = measured(f"a {colour} {shape} on a white background")
    hits = sum(r == (colour, shape) for r in results)
    assert hits >= 8, f"{hits}/10 {colour} {shape}: {results}"


def test_guidance_raises_colour_accuracy():
    def colour_hits(cfg):
        runs = [(colour, measured(f"a {colour} {shape} on a white background", guidance_scale=cfg)) for colour, shape in PAIRS]
        return sum(c == colour for colour, results in runs for c, _ in results)

    unguided, guided = colour_hits(1.0), colour_hits(CFG)
    runs = len(PAIRS) * len(SEEDS)
    # "clearly lower": at least 20 percentage points fewer right colours without guidance
    assert guided - unguided >= 0.2 * runs, f"right colour at cfg 1: {unguided}/{runs}, at cfg {CFG}: {guided}/{runs}"


def test_negative_prompt_removes_the_named_colour():
    plain = [c for c, _ in measured("a circle")]
    negated = [c for c, _ in measured("a circle", negative_prompt="red")]
    assert plain.count("red") >= 1, f"'a circle' never drew red: {plain}"  # red is one of four colours
    assert negated.count("red") <= 2, f"negative prompt 'red' still red in {negated.count('red')}/10"


@pytest.mark.xfail(strict=True, reason="measured: 'red' as negative prompt leaves red at its base rate (2/10 -> 2/10)")
def test_negative_prompt_draws_red_less_often_than_without_it():
    plain = [c for c, _ in measured("a circle")]
    negated = [c for c, _ in measured("a circle", negative_prompt="red")]
    assert negated.count("red") < plain.count("red"), f"red without negative {plain.count('red')}/10, with {negated.count('red')}/10"


BLUE_SQUARE_BOX = (14, 14, 50, 50)


def test_img2img_keeps_the_input_at_low_strength():
    blue_square = draw_shape("square", "blue", "white", BLUE_SQUARE_BOX)
    low = [classify(generate("a blue square", seed=s, image=blue_square, strength=0.3)) for s in SEEDS]
    assert sum(r == ("blue", "square") for r in low) >= 8, f"strength 0.3: {low}"


def test_img2img_follows_the_prompt_at_high_strength():
    blue_square = draw_shape("square", "blue", "white", BLUE_SQUARE_BOX)
    high = [classify(generate("a yellow triangle", seed=s, image=blue_square, strength=0.9)) for s in SEEDS]
    assert sum(r == ("yellow", "triangle") for r in high) >= 6, f"strength 0.9: {high}"


@pytest.mark.xfail(strict=True, reason="measured: with prompt 'a yellow triangle' at strength 0.3 the blue square turns green in 7/10")
def test_img2img_at_low_strength_keeps_the_input_against_a_contrary_prompt():
    blue_square = draw_shape("square", "blue", "white", BLUE_SQUARE_BOX)
    low = [classify(generate("a yellow triangle", seed=s, image=blue_square, strength=0.3)) for s in SEEDS]
    assert sum(r == ("blue", "square") for r in low) >= 8, f"strength 0.3: {low}"


@pytest.mark.xfail(strict=True, reason="measured: trained only on 16x16 latents, at 128x128 red drifts to yellow (5/10 kept)")
def test_hires_fix_keeps_colour_and_shape():
    prompt = "a red circle on a white background"
    base = measured(prompt)
    hires = [hires_fix(prompt, seed) for seed in SEEDS]
    assert all(image.size == (128, 128) for image in hires)
    kept = sum(classify(image) == first for image, first in zip(hires, base))
    assert kept >= 8, f"hires changed colour/shape in {10 - kept}/10: {[classify(i) for i in hires]} vs {base}"
