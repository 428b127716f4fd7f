"""The picture-in, picture-out examples do what the README's Workflows table says, measured on what they save:
img2img.json turns the input into the prompt's shape, hires_fix_model.json's trained upscaler beats lanczos
(PSNR) and hands its second pass a sharper picture than the pixel hires fix does, inpaint.json repaints only the masked area (the saved pixels outside it are the input's), outpaint.json fills
the new border as its prompt says and keeps the middle, denoise_animation.json has a frame per step.

Each example runs once, as shipped (``shipped`` in conftest.py); colour and shape are read back from the PNGs
with ``training.measure.classify``.
"""
import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from graphflow.events import Preview
from graphflow.workflow import load
from tests.workflows.conftest import ASSETS, ROOT, WORKFLOWS, asset
from training.measure import classify, colour_name

UPSCALER = ASSETS / "upscale_models" / "toy-compact-x4.safetensors"
COVERS = {"img2img.json", "hires_fix_model.json", "inpaint.json", "outpaint.json", "denoise_animation.json"}
ONE_LEVEL = 1  # of 255: what rounding to 8 bits may change


def gradient_energy(picture: np.ndarray) -> float:
    """Mean squared difference between neighbouring pixels (0..1 channels): higher = sharper edges."""
    pixels = picture.astype(np.float64) / 255
    return float(((pixels[1:] - pixels[:-1]) ** 2).mean() + ((pixels[:, 1:] - pixels[:, :-1]) ** 2).mean())


def prompt_of(name: str, node: str = "positive") -> str:
    return load(WORKFLOWS / name).to_json()["nodes"][node]["inputs"]["text"]


def named(text: str, words) -> set[str]:
    """Which of ``words`` the prompt ``text`` names."""
    return {word for word in words if word in text.split()}


# ------------------------------------------------------------------------------------------------ assets


def test_the_input_picture_is_a_toy_shape_the_toy_vae_reproduces(shipped):
    from nodes.vae import decode_latents, encode_pixels

    picture = asset("input.png")
    assert picture.shape == (64, 64, 3) and classify(picture) == ("blue", "square")
    assert tuple(picture[0, 0]) == (255, 255, 255), "on white, as toy-shapes was trained"
    vae = shipped.report("img2img.json").values["ckpt"]["vae"]
    pixels = torch.from_numpy(picture.astype(np.float32) / 255)[None]
    round_trip = decode_latents(vae, encode_pixels(vae, pixels))
    assert (round_trip - pixels).abs().mean() < 0.02, "the toy VAE keeps the picture"
    with PILImage.open(ASSETS / "inpaint_mask.png") as mask:
        assert mask.size == (64, 64)


def test_the_demo_images_are_what_the_script_writes(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_demo_images", ROOT / "scripts" / "make_demo_images.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, path in module.make_demo_images(tmp_path).items():
        with PILImage.open(path) as fresh, PILImage.open(ASSETS / name) as ours:
            assert fresh.tobytes() == ours.tobytes(), f"{name} is stale: run scripts/make_demo_images.py"


def test_the_shipped_upscaler_is_a_small_compact_esrgan_that_spandrel_identifies():
    from nodes.upscale import load_upscale_model

    assert UPSCALER.stat().st_size < 2_000_000
    model = load_upscale_model(UPSCALER, UPSCALER.name)
    assert (model.architecture, model.scale) == ("RealESRGAN Compact", 4)
    card = (UPSCALER.parent / "README.md").read_text()
    assert "MIT" in card and "training/train_upscaler.py" in card


# ------------------------------------------------------------------------------------------------ img2img.json


def test_img2img_turns_the_input_into_the_prompts_shape(shipped):
    prompt = prompt_of("img2img.json")
    assert classify(asset("input.png")) == ("blue", "square")
    colour, shape = classify(shipped.picture("img2img.json"))
    assert (colour, shape) == ("red", "circle") and {colour, shape} <= set(prompt.split()), prompt


# ------------------------------------------------------------------------------------------------ hires_fix_model.json


def test_hires_fix_with_a_model_upscales_4x_then_refines_at_the_target_size(shipped):
    report = shipped.report("hires_fix_model.json")
    assert report.values["decode"]["image"].pixels.shape == (1, 64, 64, 3)
    assert report.values["upscale"]["image"].pixels.shape == (1, 256, 256, 3)
    factor = report.values["ckpt"]["vae"].downscale
    assert report.values["encode"]["latent"].samples.shape[-2:] == (128 // factor, 128 // factor)
    assert shipped.picture("hires_fix_model.json").shape == (128, 128, 3)
    assert classify(shipped.picture("hires_fix_model.json")) == ("red", "circle")
    # run it once more first: tests before this one may have pushed its models out of the shared engine's pool
    shipped.engine.run(load(WORKFLOWS / "hires_fix_model.json"))
    again = shipped.engine.run(load(WORKFLOWS / "hires_fix_model.json").with_values({("noise2", "seed"): 7}))
    assert set(again.executed) == {"noise2", "sample2", "decode2", "save"}, "the upscale comes from the cache"


def test_the_trained_upscaler_beats_lanczos_on_a_toy_shape(shipped):
    """Against a 4x rendering of the same shape: higher PSNR than lanczos, on a picture it never saw."""
    from nodes.upscale import load_upscale_model, run_model
    from nodes.vae import decode_latents, encode_pixels
    from training.shapes import draw_shape

    vae = shipped.report("img2img.json").values["ckpt"]["vae"]
    small = torch.from_numpy(np.asarray(draw_shape("triangle", "green", "white", (9, 12, 47, 50)), np.float32) / 255)[None]
    decoded = decode_latents(vae, encode_pixels(vae, small))  # what a hires fix hands the upscaler
    target = np.asarray(draw_shape("triangle", "green", "white", (36, 48, 188, 200), size=256), np.float32) / 255
    model = load_upscale_model(UPSCALER, UPSCALER.name)
    upscaled = run_model(model.descriptor, decoded.permute(0, 3, 1, 2))[0].permute(1, 2, 0).float().numpy()
    picture = PILImage.fromarray((decoded[0].numpy() * 255).round().astype(np.uint8))
    lanczos = np.asarray(picture.resize((256, 256), PILImage.LANCZOS), np.float32) / 255

    def psnr(x):
        return 10 * np.log10(1 / np.mean((np.clip(x, 0, 1) - target) ** 2))

    assert psnr(upscaled) > psnr(lanczos) + 2.0


def test_hires_fix_with_the_model_starts_its_second_pass_from_a_sharper_picture(shipped):
    """The upscaler's picture (brought to 128x128) has far more edge energy than the lanczos one. The second
    pass's toy VAE (4x downscale, trained at 64x64) then sets the final edges itself: both results end up
    about as sharp, and the model's is not blurrier."""
    def resized(name):
        pixels = shipped.report(name).values["resize"]["image"].pixels[0].numpy()
        return (pixels * 255).round().astype(np.uint8)

    assert gradient_energy(resized("hires_fix_model.json")) > 2.0 * gradient_energy(resized("hires_fix_pixel.json"))
    with_model, pixel = shipped.picture("hires_fix_model.json"), shipped.picture("hires_fix_pixel.json")
    assert classify(with_model) == classify(pixel) == ("red", "circle")
    assert gradient_energy(with_model) > 0.95 * gradient_energy(pixel)


# ------------------------------------------------------------------------------------------------ inpaint.json


def pasted_where(report) -> torch.Tensor:
    """The blurred mask VAEDecode pasted the original back with (0 = the original's pixels), (H, W)."""
    paste_mask = report.values["encode"]["latent"].paste_mask
    assert paste_mask is not None, "paste-back is on"
    return paste_mask[0]


def test_inpaint_repaints_the_masked_area_as_the_prompt_says_and_keeps_the_rest_exactly(shipped):
    report = shipped.report("inpaint.json")
    result, picture = shipped.picture("inpaint.json").astype(int), asset("input.png").astype(int)
    mask = report.values["image"]["mask"].mask
    assert mask.shape == (1, 64, 64) and 0 < mask.mean() < 0.5, "the mask file is read, white = repaint"
    outside = (pasted_where(report) == 0).numpy()
    assert not outside[mask[0].numpy() > 0].any(), "the blurred mask covers the mask"
    assert outside.mean() > 0.3
    assert np.abs(result[outside] - picture[outside]).max() <= ONE_LEVEL, "outside the mask: the input's pixels"
    prompt = prompt_of("inpaint.json")
    assert classify(result.astype(np.uint8)) == ("yellow", "circle") and {"yellow", "circle"} <= set(prompt.split())
    inside = mask[0].numpy() == 1
    assert colour_name(picture[inside].mean(0) / 255) == "blue" != colour_name(result[inside].mean(0) / 255)


def test_inpaint_keeps_the_unmasked_latent_and_changes_the_masked_one(shipped):
    report = shipped.report("inpaint.json")
    encoded, result = report.values["encode"]["latent"], report.values["sample"]["latent"]
    kept = (encoded.noise_mask == 0).expand_as(encoded.samples)
    assert torch.equal(result.samples[kept], encoded.samples[kept])
    assert (result.samples[~kept] - encoded.samples[~kept]).abs().mean() > 0.1


def test_inpaint_runs_unchanged_with_an_inpainting_model(shipped):
    workflow = load(WORKFLOWS / "inpaint.json")
    workflow = workflow.with_values({("schedule", "steps"): 4})
    plain = shipped.engine.run(workflow.with_values({("ckpt", "name"): "tiny-sd"})).values["sample"]["latent"].samples
    report = shipped.engine.run(workflow.with_values({("ckpt", "name"): "tiny-sd-inpainting"}))
    assert report.values["ckpt"]["model"].in_channels == 9
    assert report.values["decode"]["image"].pixels.shape == (1, 64, 64, 3)
    assert not torch.allclose(report.values["sample"]["latent"].samples, plain)


# ------------------------------------------------------------------------------------------------ outpaint.json


def test_outpaint_fills_the_new_border_as_its_prompt_says_and_keeps_the_middle(shipped):
    report = shipped.report("outpaint.json")
    result, picture = shipped.picture("outpaint.json").astype(int), asset("input.png").astype(int)
    assert result.shape == (64, 128, 3)
    padded = report.values["pad"]["image"].pixels
    assert torch.equal(padded[:, :, 32:96], report.values["image"]["image"].pixels)
    mask = report.values["pad"]["mask"].mask
    assert torch.all(mask[:, :, :32] == 1) and torch.all(mask[:, :, 96:] == 1) and torch.all(mask[:, :, 48:80] == 0)
    kept = (pasted_where(report) == 0).numpy()
    assert kept[:, 32:96].mean() > 0.5 and not kept[:, :32].any()
    middle = kept[:, 32:96]
    assert np.abs(result[:, 32:96][middle] - picture[middle]).max() <= ONE_LEVEL, "the kept middle is the input's"
    border_colour = named(prompt_of("outpaint.json"), ("red", "green", "blue", "yellow"))
    for side in (result[:, :24], result[:, -24:]):
        assert {colour_name(side.reshape(-1, 3).mean(0) / 255)} == border_colour, f"border {side.reshape(-1, 3).mean(0)}"


# ------------------------------------------------------------------------------------------------ denoise_animation.json


def test_denoise_animation_has_a_frame_per_step_and_streams_previews(shipped):
    from nodes.vae import decode_latents

    events = []
    steps = load(WORKFLOWS / "denoise_animation.json").to_json()["nodes"]["schedule"]["inputs"]["steps"]
    report = shipped.engine.run(load(WORKFLOWS / "denoise_animation.json").with_values({("noise", "seed"): 11}),
                                on_event=events.append)
    assert [e.step for e in events if isinstance(e, Preview) and e.node == "sample"] == list(range(1, steps + 1))
    (animation,) = report.outputs["animate"]["images"]
    assert (animation["format"], animation["frames"], animation["width"], animation["height"]) == ("webp", steps, 64, 64)
    with PILImage.open(shipped.engine.settings.output_dir / animation["filename"]) as webp:
        # lossy WebP merges frames that encode the same; the last steps barely change anything
        assert webp.format == "WEBP" and 1 < webp.n_frames <= steps and webp.size == (64, 64)
    frames = report.values["sample"]["previews"].pixels
    assert frames.shape == (steps, 64, 64, 3)
    # Euler's last prediction of the finished latent is the result itself, up to rounding
    final = decode_latents(report.values["ckpt"]["vae"], report.values["sample"]["latent"].samples)
    assert (frames[-1] - final[0]).abs().max() < 1e-3
    assert classify((frames[-1].numpy() * 255).round().astype(np.uint8)) == ("red", "circle")
    assert classify((frames[0].numpy() * 255).round().astype(np.uint8)) != ("red", "circle"), "it starts from noise"


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
