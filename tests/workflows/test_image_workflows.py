"""The hires-fix-with-a-model, inpainting, outpainting and denoising-animation examples run as shipped and do
what they show.

Settings as ``graphflow run workflows/X.json`` has them: an empty models folder, an empty input folder,
``workflows/assets`` as the read-only asset folder (the picture, the mask and the tiny 4× ESRGAN come from
there), a temporary output folder. The built-in tiny model has random weights, so its pictures are noise and
its VAE barely reconstructs anything: the checks are about geometry and about what is kept, not about looks.
"""
from pathlib import Path

import pytest
import torch
from PIL import Image as PILImage

from graphflow import Engine, Settings
from graphflow.events import Preview
from graphflow.workflow import load

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "workflows"
ASSETS = WORKFLOWS / "assets"
UPSCALER = ASSETS / "upscale_models" / "tiny-esrgan-x4.safetensors"


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    root = tmp_path_factory.mktemp("issue7")
    settings = Settings(models_dir=root / "models", input_dir=root / "inputs", output_dir=root / "outputs",
                        asset_dirs=(ASSETS,))
    return Engine(settings=settings, check_mutations=True)


def quick(name: str, steps: int = 4):
    """The example with fewer sampling steps (what is checked here does not depend on the step count)."""
    workflow = load(WORKFLOWS / name)
    schedules = [node_id for node_id, node in workflow.to_json()["nodes"].items() if node["type"] == "Schedule"]
    return workflow.with_values({(node_id, "steps"): steps for node_id in schedules})


def saved_files(engine, report, node="save") -> list[Path]:
    return [engine.settings.output_dir / image["filename"] for image in report.outputs[node]["images"]]


def saved_size(engine, report, node="save") -> tuple[int, int]:
    (path,) = saved_files(engine, report, node)
    with PILImage.open(path) as png:
        assert png.format == "PNG"
        return png.size


def outside_latent_mask(latent) -> torch.Tensor:
    """Where the latent's noise mask is 0, broadcast over its channels."""
    return (latent.noise_mask == 0).expand_as(latent.samples)


# ------------------------------------------------------------------------------------------------ assets


def test_the_shipped_upscaler_is_the_tiny_esrgan_and_small():
    from safetensors.torch import load_file

    from tests.upscale_assets import tiny_esrgan_state_dict

    shipped, fresh = load_file(str(UPSCALER)), tiny_esrgan_state_dict(scale=4, seed=0)
    assert shipped.keys() == fresh.keys() and all(torch.equal(shipped[k], fresh[k]) for k in fresh), \
        "rewrite it: tests.upscale_assets.write_tiny_esrgan(path, scale=4, seed=0)"
    assert UPSCALER.stat().st_size < 1_000_000
    with PILImage.open(ASSETS / "inpaint_mask.png") as mask, PILImage.open(ASSETS / "input.png") as picture:
        assert mask.size == picture.size


# ------------------------------------------------------------------------------------------------ hires_fix_model.json


def test_hires_fix_with_a_model_upscales_4x_then_refines_at_the_target_size(engine):
    workflow = quick("hires_fix_model.json")
    report = engine.run(workflow)
    upscaler = report.values["upscaler"]["upscale_model"]
    assert (upscaler.architecture, upscaler.scale) == ("ESRGAN", 4)
    assert report.values["decode"]["image"].pixels.shape == (1, 64, 64, 3)
    assert report.values["upscale"]["image"].pixels.shape == (1, 256, 256, 3)
    factor = report.values["ckpt"]["vae"].downscale
    assert report.values["encode"]["latent"].samples.shape[-2:] == (128 // factor, 128 // factor)
    assert saved_size(engine, report) == (128, 128)
    again = engine.run(workflow.with_values({("noise2", "seed"): 7}))
    assert set(again.executed) == {"noise2", "sample2", "decode2", "save"}, "the upscale comes from the cache"


# ------------------------------------------------------------------------------------------------ inpaint.json


def test_inpaint_repaints_only_the_masked_area(engine):
    from nodes.vae import decode_latents

    report = engine.run(quick("inpaint.json"))
    assert saved_size(engine, report) == (64, 64)
    mask = report.values["image"]["mask"].mask
    assert mask.shape == (1, 64, 64) and 0 < mask.mean() < 0.5, "the mask file is read, white = repaint"
    encoded, result = report.values["encode"]["latent"], report.values["sample"]["latent"]
    kept = outside_latent_mask(encoded)
    assert torch.equal(result.samples[kept], encoded.samples[kept]), "outside the mask the latent is the input's"
    assert (result.samples[~kept] - encoded.samples[~kept]).abs().mean() > 0.1
    # In pixels, the VAE decoder's attention spreads the repainted area into the rest a little; the kept area
    # must still be much closer to the input's VAE round trip than the repainted area is.
    round_trip = decode_latents(report.values["ckpt"]["vae"], encoded.samples)
    change = (report.values["decode"]["image"].pixels - round_trip).abs().amax(-1)[0]
    assert change[mask[0] == 0].mean() < 0.5 * change[mask[0] == 1].mean()


def test_inpaint_runs_unchanged_with_an_inpainting_model(engine):
    workflow = quick("inpaint.json")
    plain = engine.run(workflow.with_values({("ckpt", "name"): "tiny-sd"})).values["sample"]["latent"].samples
    report = engine.run(workflow.with_values({("ckpt", "name"): "tiny-sd-inpainting"}))
    assert report.values["ckpt"]["model"].in_channels == 9
    assert saved_size(engine, report) == (64, 64)
    assert not torch.allclose(report.values["sample"]["latent"].samples, plain)


# ------------------------------------------------------------------------------------------------ outpaint.json


def test_outpaint_widens_the_canvas_and_keeps_the_middle(engine):
    report = engine.run(quick("outpaint.json"))
    assert saved_size(engine, report) == (128, 64)
    padded = report.values["pad"]["image"].pixels
    assert torch.equal(padded[:, :, 32:96], report.values["image"]["image"].pixels)
    mask = report.values["pad"]["mask"].mask
    assert torch.all(mask[:, :, :32] == 1) and torch.all(mask[:, :, 96:] == 1) and torch.all(mask[:, :, 48:80] == 0)
    encoded, result = report.values["encode"]["latent"], report.values["sample"]["latent"]
    kept = outside_latent_mask(encoded)
    assert kept.any() and torch.equal(result.samples[kept], encoded.samples[kept])


# ------------------------------------------------------------------------------------------------ denoise_animation.json


def test_denoise_animation_has_a_frame_per_step_and_streams_previews(engine):
    from nodes.vae import decode_latents

    events, steps = [], 6
    report = engine.run(quick("denoise_animation.json", steps), on_event=events.append)
    assert [e.step for e in events if isinstance(e, Preview) and e.node == "sample"] == list(range(1, steps + 1))
    (animation,) = report.outputs["animate"]["images"]
    assert (animation["format"], animation["frames"], animation["width"], animation["height"]) == ("webp", steps, 64, 64)
    with PILImage.open(engine.settings.output_dir / animation["filename"]) as webp:
        # lossy WebP merges frames that encode the same; the tiny model's last steps barely change anything
        assert webp.format == "WEBP" and 1 < webp.n_frames <= steps and webp.size == (64, 64)
    frames = report.values["sample"]["previews"].pixels
    assert frames.shape == (steps, 64, 64, 3)
    # Euler's last prediction of the finished latent is the result itself, up to rounding
    final = decode_latents(report.values["ckpt"]["vae"], report.values["sample"]["latent"].samples)
    assert (frames[-1] - final[0]).abs().max() < 1e-3
    assert saved_size(engine, report) == (64, 64)


# ------------------------------------------------------------------------------------------------ as a user runs them


@pytest.mark.parametrize("name,prefix", [("inpaint.json", "inpaint"), ("hires_fix_model.json", "hires_fix_model")])
def test_examples_run_from_the_command_line_with_an_empty_input_folder(tmp_path, monkeypatch, name, prefix):
    from graphflow.cli import main

    monkeypatch.chdir(ROOT)
    # from the repo root, with an input folder that holds nothing: the picture, the mask and the upscaler
    # are found in workflows/assets, which the CLI adds for the workflow it runs
    settings = ["--set", "schedule.steps=2"] + (["--set", "schedule2.steps=2"] if "hires" in name else [])
    code = main(["run", f"workflows/{name}", "--models", str(tmp_path / "models"), "--inputs", str(tmp_path / "in"),
                 "--out", str(tmp_path / "out"), *settings])
    assert code == 0
    assert [p.name for p in (tmp_path / "out").glob("*.png")] == [f"{prefix}_00001.png"]
