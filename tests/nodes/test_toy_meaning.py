"""Checks of meaning for the built-in ``toy-shapes`` model: the picture follows the prompt.

Pictures come from graphflow workflows (``training.evaluate.ToyRuns``: builder, Engine, SaveImage) over the
fixed seeds 0..9, made once per session as one batch per prompt (AddNoise's ``seed_plus_index``: each picture
is the one its seed gives alone) and shared by every check that reads them; colour and shape are read back
from the saved PNGs. Model and seeds are fixed, so the counts are deterministic.
"""
from __future__ import annotations

import json
import re

import pytest

from nodes.loaders import TOY_SHAPES as TOY
from training.evaluate import BLUE_SQUARE, CFG, PAIRS, ToyRuns, card_rows

pytestmark = [
    pytest.mark.skipif(not (TOY / "model_index.json").exists(), reason="toy-shapes weights not built"),
    # The first check that reads the twelve prompts makes their 240 pictures (seconds on a quiet machine,
    # 806 s measured at load average 15 on 2 cores): a limit for a hang, not for a busy machine.
    pytest.mark.timeout(2400),
]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return ToyRuns(tmp_path_factory.mktemp("toy-meaning"), "toy-shapes", seeds=range(10))


def test_folder_is_a_standard_sd_pipeline_under_20_mb(toy):
    size = sum(f.stat().st_size for f in TOY.rglob("*") if f.is_file())
    assert size < 20_000_000
    index = json.loads((TOY / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"] and index["vae"] == ["diffusers", "AutoencoderKL"]
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"]
    text_config = json.loads((TOY / "text_encoder" / "config.json").read_text())
    assert (text_config["bos_token_id"], text_config["eos_token_id"], text_config["pad_token_id"]) == (49406, 49407, 49407)
    assert list(TOY.rglob("*.safetensors")) and not list(TOY.rglob("*.bin"))
    assert toy.picture("a red circle", steps=2).size == (64, 64)


def test_prompts_draw_the_named_colour_and_shape(toy):
    """"a red circle on a white background" 8/10 or better, and so most other pairs (the issue asks two)."""
    hits = {(c, s): sum(r == (c, s) for r in toy.measured(f"a {c} {s} on a white background")) for c, s in PAIRS}
    assert hits["red", "circle"] >= 8, f"red circle {hits['red', 'circle']}/10"
    good = [pair for pair, n in hits.items() if n >= 8 and pair != ("red", "circle")]
    assert len(good) >= 9, f"only {len(good)} of the other 11 pairs drawn right in 8/10: {hits}"


def test_guidance_raises_colour_accuracy(toy):
    def colour_hits(cfg):
        return sum(c == colour for colour, shape in PAIRS
                   for c, _ in toy.measured(f"a {colour} {shape} on a white background", cfg=cfg))

    unguided, guided = colour_hits(1.0), colour_hits(CFG)
    runs = len(PAIRS) * len(toy.seeds)
    # "clearly lower": at least 20 percentage points fewer right colours without guidance
    assert guided - unguided >= 0.2 * runs, f"right colour at cfg 1: {unguided}/{runs}, at cfg {CFG}: {guided}/{runs}"


def test_negative_prompt_removes_the_named_colour(toy):
    plain = [c for c, _ in toy.measured("a circle")]
    negated = [c for c, _ in toy.measured("a circle", negative="red")]
    assert plain.count("red") >= 1, f"'a circle' never drew red: {plain}"  # red is one of four colours
    assert negated.count("red") <= 2, f"negative prompt 'red' still red in {negated.count('red')}/10"
    assert negated.count("red") < plain.count("red"), f"red without negative {plain.count('red')}/10, with {negated.count('red')}/10"


def test_img2img_keeps_the_input_at_low_strength(toy):
    low = toy.measured("a blue square", image=BLUE_SQUARE, strength=0.3)
    assert sum(r == ("blue", "square") for r in low) >= 8, f"strength 0.3: {low}"


def test_img2img_follows_the_prompt_at_high_strength(toy):
    high = toy.measured("a yellow triangle", image=BLUE_SQUARE, strength=0.9)
    assert sum(r == ("yellow", "triangle") for r in high) >= 6, f"strength 0.9: {high}"


@pytest.mark.xfail(strict=True, reason="measured: with prompt 'a yellow triangle' at strength 0.3 the square stays but turns green (blue + yellow) in 9/10")
def test_img2img_at_low_strength_keeps_the_input_against_a_contrary_prompt(toy):
    low = toy.measured("a yellow triangle", image=BLUE_SQUARE, strength=0.3)
    assert sum(r == ("blue", "square") for r in low) >= 8, f"strength 0.3: {low}"


def test_hires_fix_keeps_colour_and_shape(toy):
    prompt = "a red circle on a white background"
    assert toy.picture(prompt, steps=2, hires_strength=0.5).size == (128, 128)
    kept = toy.hires_kept(prompt)
    assert sum(kept) >= 8, f"hires changed colour/shape in {kept.count(False)}/10: {toy.measured(prompt, hires_strength=0.5)} vs {toy.measured(prompt)}"


def test_the_model_card_reports_what_is_measured(toy):
    """Every row of the card's table is measured again; counts may differ by one (float noise from another CPU
    can flip a borderline picture), anything more means the card is out of date."""
    rows = dict(re.findall(r"^\| (.+?) \| (.+?) \|$", (TOY / "README.md").read_text(encoding="utf-8"), re.MULTILINE))
    for check, result in card_rows(toy):
        assert check in rows, f"model card lacks the row {check!r}"
        card_counts, measured_counts = (re.findall(r"(\d+)/\d+", text) for text in (rows[check], result))
        assert re.sub(r"\d+/", "/", rows[check]) == re.sub(r"\d+/", "/", result), f"{check}: card {rows[check]!r}, measured {result!r}"
        assert all(abs(int(a) - int(b)) <= 1 for a, b in zip(card_counts, measured_counts)), \
            f"model card out of date: {check}: card says {rows[check]!r}, measured {result!r}"
