"""Every example workflow in workflows/ runs through the Engine, and a hires fix reruns only its second pass.

Settings for the runs: ``input_dir`` is ``workflows/assets`` (img2img.json loads ``input.png`` from there,
as ``graphflow run workflows/img2img.json --inputs workflows/assets`` does), ``models_dir`` a temporary folder
holding the tiny LoRA / embedding assets some examples use, ``output_dir`` a temporary folder.
"""
import json
from pathlib import Path

import pytest
from PIL import Image as PILImage

from graphflow import Engine, Settings
from graphflow.workflow import load
from training.measure import classify

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
ALL = sorted(WORKFLOWS.glob("*.json"))
# Saved sizes of the examples this file knows; other examples only have to run and save PNGs.
EXPECTED_SIZES = {
    "txt2img.json": (64, 64), "txt2img_negative.json": (64, 64), "img2img.json": (64, 64),
    "hires_fix.json": (128, 128), "hires_fix_pixel.json": (128, 128), "batch_grid.json": (128, 128),
}

# What the examples on toy-shapes draw, read back from their PNGs: (colours allowed, shape). The README's first
# command has to show a recognizable picture, and a hires fix must not lose it. (hires_fix_model.json is not
# here: its shipped ESRGAN is a random-weight stand-in for a real upscaler file.)
RED = {"red"}
EXPECTED_DRAWINGS = {
    "txt2img.json": (RED, "circle"), "img2img.json": (RED, "circle"), "hires_fix.json": (RED, "circle"),
    "hires_fix_pixel.json": (RED, "circle"), "txt2img_negative.json": ({"green", "blue", "yellow"}, "circle"),
}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """Settings as `graphflow run workflows/X.json` has them: empty user folders, the shipped assets folder."""
    root = tmp_path_factory.mktemp("workflows")
    settings = Settings(models_dir=root / "models", input_dir=root / "inputs", output_dir=root / "outputs",
                        asset_dirs=(WORKFLOWS / "assets",))
    return Engine(settings=settings, check_mutations=True)


def test_the_examples_are_there():
    assert set(EXPECTED_SIZES) <= {p.name for p in ALL}
    assert (WORKFLOWS / "assets" / "input.png").is_file()


@pytest.mark.parametrize("path", ALL, ids=[p.name for p in ALL])
def test_example_runs_and_saves_pngs(engine, path):
    report = engine.run(path)
    saved = [image for output in report.outputs.values() for image in output.get("images", [])]
    assert saved, f"{path.name} saved no image"
    for image in saved:
        file = engine.settings.output_dir / image["filename"]
        if file.suffix != ".png":  # animations: tests/workflows/test_issue7_workflows.py checks those
            continue
        with PILImage.open(file) as png:
            assert png.format == "PNG" and png.size == (image["width"], image["height"])
            if path.name in EXPECTED_SIZES:
                assert png.size == EXPECTED_SIZES[path.name]
            assert json.loads(png.text["workflow"])["nodes"].keys() == json.loads(path.read_text())["nodes"].keys()
            assert "Size: " in png.text["parameters"]


@pytest.mark.parametrize("name", sorted(EXPECTED_DRAWINGS))
def test_example_draws_what_its_prompt_says(engine, name):
    report = engine.run(WORKFLOWS / name)
    (saved,) = [image for output in report.outputs.values() for image in output.get("images", [])]
    colours, shape = EXPECTED_DRAWINGS[name]
    with PILImage.open(engine.settings.output_dir / saved["filename"]) as png:
        drawn = classify(png)
    assert drawn[0] in colours and drawn[1] == shape, f"{name} drew {drawn}"


def test_hires_fix_second_seed_reruns_only_the_second_pass(engine):
    workflow = load(WORKFLOWS / "hires_fix.json")
    engine.run(workflow)
    report = engine.run(workflow.with_values({("noise2", "seed"): 4321}))
    assert set(report.executed) == {"noise2", "sample2", "decode2", "save2"}
    assert {"ckpt", "sample", "upscale", "schedule2"} <= set(report.cached)


def test_same_workflow_twice_gives_byte_identical_pixels(tmp_path):
    """Two engines (nothing cached between them) running txt2img.json write the same pixels."""
    pixels = []
    for run in ("first", "second"):
        settings = Settings(models_dir=tmp_path / "models", input_dir=tmp_path / "inputs",
                            output_dir=tmp_path / run, asset_dirs=(WORKFLOWS / "assets",))
        report = Engine(settings=settings).run(WORKFLOWS / "txt2img.json")
        [image] = report.outputs["save"]["images"]
        with PILImage.open(settings.output_dir / image["filename"]) as png:
            pixels.append(png.tobytes())
    assert pixels[0] == pixels[1]
