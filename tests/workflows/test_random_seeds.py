"""A shipped workflow with seed -1: each run draws its own seed, and the PNG records the seed that was drawn."""
import json
from pathlib import Path

from PIL import Image as PILImage

from graphflow import Engine, Settings
from graphflow.workflow import load

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


def test_seed_minus_one_draws_a_new_image_and_the_png_says_which_seed(tmp_path):
    engine = Engine(settings=Settings(models_dir=tmp_path / "models", input_dir=tmp_path / "inputs",
                                      output_dir=tmp_path / "outputs"))
    workflow = load(WORKFLOWS / "txt2img.json").with_values({("ckpt", "name"): "tiny-sd", ("noise", "seed"): -1,
                                                              ("schedule", "steps"): 2})
    runs = [engine.run(workflow) for _ in range(2)]
    seeds = [run.seeds["noise"]["seed"] for run in runs]
    assert seeds[0] != seeds[1] and "noise" in runs[1].executed and "ckpt" in runs[1].cached
    pictures = []
    for run, seed in zip(runs, seeds):
        [image] = run.outputs["save"]["images"]
        with PILImage.open(tmp_path / "outputs" / image["filename"]) as png:
            assert f"Seed: {seed}," in png.text["parameters"]
            assert json.loads(png.text["graphflow"])["nodes"]["noise"]["inputs"]["seed"] == seed
            pictures.append(png.convert("RGB").tobytes())
    assert pictures[0] != pictures[1]
