"""Every example workflow in workflows/ runs through the Engine as shipped, draws what its README line says, and
a hires fix reruns only its second pass.

Each example runs once per session (``shipped`` in conftest.py: settings as ``graphflow run workflows/X.json``
has them); the files next to this one check the rest of what each example promises, and
``test_every_example_has_a_check_of_what_it_shows`` keeps that list complete.
"""
import json

import numpy as np
import pytest
from PIL import Image as PILImage

from graphflow import Engine, Settings
from graphflow.workflow import load
from tests.workflows import (test_controlnet_workflow, test_face_workflow, test_image_workflows,
                             test_prompt_lora_merge_workflows, test_sdxl_controlnet_workflow, test_sdxl_workflows)
from tests.workflows.conftest import WORKFLOWS
from training.measure import classify

ALL = sorted(WORKFLOWS.glob("*.json"))
EXPECTED_SIZES = {
    "txt2img.json": (64, 64), "txt2img_negative.json": (64, 64), "img2img.json": (64, 64),
    "hires_fix.json": (128, 128), "hires_fix_pixel.json": (128, 128), "hires_fix_model.json": (128, 128),
    "batch_grid.json": (128, 128), "inpaint.json": (64, 64), "outpaint.json": (128, 64),
    "denoise_animation.json": (64, 64), "lora.json": (64, 64), "long_prompt.json": (64, 64), "merge.json": (64, 64),
    "controlnet_canny.json": (64, 64), "sdxl_txt2img.json": (1024, 1024), "sdxl_refiner.json": (1024, 1024),
    "face_restore.json": (128, 128),
    "sdxl_controlnet.json": (1024, 1024),
}

# What the examples on toy-shapes draw, read back from their PNGs: (colours allowed, shape). The README's first
# command has to show a recognizable picture, and a hires fix must not lose it.
RED = {"red"}
EXPECTED_DRAWINGS = {
    "txt2img.json": (RED, "circle"), "hires_fix.json": (RED, "circle"), "hires_fix_pixel.json": (RED, "circle"),
    "txt2img_negative.json": ({"green", "blue", "yellow"}, "circle"), "merge.json": (RED, "circle"),
}
COVERS = set(EXPECTED_DRAWINGS) | {"batch_grid.json"}


def test_every_example_has_a_check_of_what_it_shows():
    checked = (COVERS | test_image_workflows.COVERS | test_prompt_lora_merge_workflows.COVERS
               | test_controlnet_workflow.COVERS | test_sdxl_workflows.COVERS | test_face_workflow.COVERS
               | test_sdxl_controlnet_workflow.COVERS)
    assert {p.name for p in ALL} == checked == set(EXPECTED_SIZES)


def test_the_examples_are_there():
    assert set(EXPECTED_SIZES) <= {p.name for p in ALL}
    assert (WORKFLOWS / "assets" / "input.png").is_file()


@pytest.mark.parametrize("path", ALL, ids=[p.name for p in ALL])
def test_example_runs_and_saves_pngs(shipped, path):
    saved = [image for output in shipped.report(path.name).outputs.values() for image in output.get("images", [])]
    assert saved, f"{path.name} saved no image"
    for image in saved:
        file = shipped.engine.settings.output_dir / image["filename"]
        if file.suffix != ".png":  # animations: test_image_workflows.py checks those
            continue
        with PILImage.open(file) as png:
            assert png.format == "PNG" and png.size == (image["width"], image["height"]) == EXPECTED_SIZES[path.name]
            assert json.loads(png.text["graphflow"])["nodes"].keys() == json.loads(path.read_text())["nodes"].keys()
            assert "Size: " in png.text["parameters"]


@pytest.mark.parametrize("name", sorted(EXPECTED_DRAWINGS))
def test_example_draws_what_its_prompt_says(shipped, name):
    colours, shape = EXPECTED_DRAWINGS[name]
    drawn = classify(shipped.picture(name))
    assert drawn[0] in colours and drawn[1] == shape, f"{name} drew {drawn}"


def test_batch_grid_shows_four_different_pictures_of_the_prompt(shipped):
    grid = shipped.picture("batch_grid.json")
    cells = [grid[y:y + 64, x:x + 64] for y in (0, 64) for x in (0, 64)]
    drawn = [classify(cell) for cell in cells]
    assert sum(d == ("red", "circle") for d in drawn) >= 3, drawn
    assert len({cell.tobytes() for cell in cells}) == 4, "four seeds of one batch, not one picture four times"
    batch = shipped.report("batch_grid.json").values["decode"]["image"].pixels
    assert np.array_equal(cells[1], np.asarray((batch[1].numpy() * 255).round().astype(np.uint8))), "left to right, then down"


def test_hires_fix_second_seed_reruns_only_the_second_pass(shipped):
    workflow = load(WORKFLOWS / "hires_fix.json")
    shipped.report("hires_fix.json")
    report = shipped.engine.run(workflow.with_values({("noise2", "seed"): 4321}))
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
