"""The A1111 parameters text of each shipped workflow's PNG, read back with an independent infotext reader,
says what ran: each workflow runs with its steps and seeds changed, so a text copied from the JSON file fails."""
import json
from pathlib import Path

import pytest
from PIL import Image as PILImage

from graphflow import Engine, Settings
from graphflow.workflow import load
from tests.nodes.a1111_infotext import read

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
# Our sampler names as A1111 ≥ 1.9 writes them: the sampler, and the schedule it reads separately.
A1111 = {"euler_a": ("Euler a", "Uniform"), "euler": ("Euler", "Uniform"), "dpmpp_2m": ("DPM++ 2M", "Uniform"),
         "dpmpp_2m_karras": ("DPM++ 2M", "Karras")}
# workflow → (save node, hires upscaler as A1111 names it or None, LoRA tags, model recorded, cells in the image)
CASES = {
    "txt2img": ("save", None, [], "toy-shapes", 1),
    "hires_fix": ("save2", "Latent (bicubic)", [], "toy-shapes", 1),
    "hires_fix_pixel": ("save2", "Lanczos", [], "toy-shapes", 1),
    "hires_fix_model": ("save", "toy-compact-x4", [], "toy-shapes", 1),
    "batch_grid": ("save", None, [], "toy-shapes", 2),
    "lora": ("save", None, [("tiny-lora-a", 0.6, 0.8), ("tiny-lora-b", 1.0, 0.5)], "toy-shapes", 1),
    "merge": ("save", None, [], None, 1),  # a merge of two models: no file holds it, so no Model
}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    root = tmp_path_factory.mktemp("metadata")
    return Engine(settings=Settings(models_dir=root / "models", input_dir=root / "inputs", output_dir=root / "outputs",
                                    asset_dirs=(WORKFLOWS / "assets",)))


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_parameters_text_says_what_ran(engine, name):
    save, upscaler, loras, model, cells = CASES[name]
    document = json.loads((WORKFLOWS / f"{name}.json").read_text())
    nodes = document["nodes"]
    hires = "schedule2" in nodes
    changes = {("schedule", "steps"): 3, ("noise", "seed"): 1000 + len(name)}
    if hires:
        changes[("schedule2", "steps")] = 4
    report = engine.run(load(WORKFLOWS / f"{name}.json").with_values(changes), outputs=[save])
    (saved,) = report.outputs[save]["images"]
    with PILImage.open(engine.settings.output_dir / saved["filename"]) as png:
        text, size = read(png.text["parameters"]), png.size
    sampler, schedule = A1111[nodes["schedule"]["inputs"]["sampler"]]
    first = nodes["empty"]["inputs"]
    expected = {"Steps": "3", "Sampler": sampler, "Schedule type": schedule,
                "CFG scale": f"{nodes['sample']['inputs']['cfg']:g}", "Seed": str(1000 + len(name)),
                "Size": f"{first['width']}x{first['height']}"}
    if model:
        expected["Model"] = model  # toy-shapes is a diffusers folder: A1111's hash is of a single file
    if hires:
        scale = size[0] // first["width"]
        expected.update({"Denoising strength": f"{nodes['schedule2']['inputs']['denoise']:g}",
                         "Hires upscale": str(scale), "Hires steps": "4", "Hires upscaler": upscaler})
        assert scale == 2 and size == (first["width"] * 2, first["height"] * 2)
    else:
        assert size == (first["width"] * cells, first["height"] * cells)
    assert text.params == expected
    assert text.prompt_without_loras() == nodes["positive"]["inputs"]["text"]
    assert text.negative == nodes["negative"]["inputs"]["text"]
    assert text.loras() == loras


def test_a_single_file_checkpoint_is_recorded_with_a1111s_short_hash(engine, tmp_path):
    """merge.json's saved checkpoint, loaded back as a file: Model is its name, Model hash its sha256[:10]."""
    import hashlib
    import shutil

    merged = engine.run(WORKFLOWS / "merge.json", outputs=["save_checkpoint"])
    (checkpoint,) = merged.outputs["save_checkpoint"]["checkpoints"]
    models = engine.settings.models_dir / "checkpoints"
    models.mkdir(parents=True, exist_ok=True)
    shutil.copy(engine.settings.output_dir / checkpoint["filename"], models / "my-merge.safetensors")
    workflow = load(WORKFLOWS / "txt2img.json").with_values({("ckpt", "name"): "my-merge.safetensors",
                                                             ("schedule", "steps"): 2})
    (saved,) = engine.run(workflow).outputs["save"]["images"]
    with PILImage.open(engine.settings.output_dir / saved["filename"]) as png:
        params = read(png.text["parameters"]).params
    assert params["Model"] == "my-merge"
    assert params["Model hash"] == hashlib.sha256((models / "my-merge.safetensors").read_bytes()).hexdigest()[:10]


def test_a_png_reruns_and_its_parameters_import_back(engine, tmp_path):
    """txt2img's PNG: `graphflow run --from-png` draws it again; `graphflow import-a1111` of its parameters
    text builds a workflow that draws it again too, and writes the same text."""
    from graphflow.cli import main

    first = engine.run(load(WORKFLOWS / "txt2img.json").with_values({("schedule", "steps"): 2, ("noise", "seed"): 9}))
    png = engine.settings.output_dir / first.outputs["save"]["images"][0]["filename"]
    with PILImage.open(png) as picture:
        pixels, parameters = picture.tobytes(), picture.text["parameters"]
    dirs = ["--models", str(engine.settings.models_dir), "--out", str(tmp_path / "again")]
    assert main(["run", "--from-png", str(png), *dirs]) == 0
    assert main(["import-a1111", parameters, "-o", str(tmp_path / "imported.json")]) == 0
    assert main(["run", str(tmp_path / "imported.json"), *dirs]) == 0
    again = sorted((tmp_path / "again").glob("*.png"))
    assert len(again) == 2
    for path in again:
        with PILImage.open(path) as picture:
            assert picture.tobytes() == pixels
            assert picture.text["parameters"] == parameters
