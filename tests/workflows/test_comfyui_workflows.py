"""ComfyUI's default workflows (txt2img, img2img, latent and model hires fix, inpaint, outpaint, LoRA, multiple
LoRA, embedding, area composition), our own fixtures in workflows/comfyui/ in both of ComfyUI's formats, run with
``graphflow run`` on the built-in toy-shapes model substituted by name (``--set 4.ckpt_name=toy-shapes``).

The API and UI file of each workflow give the same picture (their UI files also exercise the UI rules: a Note, a
Reroute, a PrimitiveNode seed, a bypassed and a muted node), and each picture shows what its workflow is for.
ComfyUI makes latents at 1/8 of the asked size; toy-shapes' VAE scales by 4, so 128 × 128 gives 64 × 64 pictures.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from graphflow.cli import main
from training.measure import classify

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "workflows" / "comfyui"
ASSETS = ROOT / "workflows" / "assets"
NAMES = sorted(p.name.removesuffix(".api.json") for p in FIXTURES.glob("*.api.json"))
BUILT_IN = ["--set", "4.ckpt_name=toy-shapes"]


class Runs:
    """Each fixture run once per session through the CLI's own entry point (as `graphflow run` runs it)."""

    def __init__(self, root: Path):
        self.root = root
        (root / "models").mkdir()
        (root / "inputs").mkdir()

    def picture(self, name: str, *options: str) -> np.ndarray:
        out = self.root / "out" / "-".join((name, *options)).replace("=", "_").replace("/", "_")
        if not out.exists():
            code = main(["run", str(FIXTURES / name), *BUILT_IN, *options, "--models", str(self.root / "models"),
                         "--inputs", str(self.root / "inputs"), "--out", str(out)])
            assert code == 0
        [path] = sorted(out.rglob("*.png"))
        with PILImage.open(path) as png:
            return np.asarray(png.convert("RGB")).astype(np.int16)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return Runs(tmp_path_factory.mktemp("comfyui"))


def asset(name: str) -> np.ndarray:
    with PILImage.open(ASSETS / name) as picture:
        return np.asarray(picture.convert("RGB")).astype(np.int16)


def test_every_default_workflow_is_here_in_both_formats():
    assert NAMES == ["area_composition", "embedding", "hires_fix_latent", "hires_fix_model", "img2img", "inpaint",
                     "lora", "multiple_lora", "outpaint", "txt2img"]
    assert sorted(p.name for p in FIXTURES.glob("*.ui.json")) == [f"{name}.ui.json" for name in NAMES]


@pytest.mark.parametrize("name", NAMES)
def test_the_api_and_ui_files_give_the_same_picture(runs, name):
    assert np.array_equal(runs.picture(f"{name}.api.json"), runs.picture(f"{name}.ui.json"))


@pytest.mark.parametrize("name, size", [("txt2img", (64, 64)), ("hires_fix_latent", (128, 128)),
                                        ("hires_fix_model", (128, 128))])
def test_txt2img_and_both_hires_fixes_draw_the_prompts_red_circle(runs, name, size):
    picture = runs.picture(f"{name}.api.json")
    assert picture.shape[:2] == size and classify(picture.astype(np.uint8)) == ("red", "circle")


def test_img2img_starts_from_the_input(runs):
    source = asset("input.png")
    assert classify(source.astype(np.uint8)) == ("blue", "square")
    redrawn = runs.picture("img2img.api.json")  # denoise 0.6: the prompt's red circle
    assert classify(redrawn.astype(np.uint8)) == ("red", "circle")
    touched = runs.picture("img2img.api.json", "--set", "3.denoise=0.1")  # barely denoised: still the input's blue
    assert classify(touched.astype(np.uint8))[0] == "blue"
    assert np.abs(touched - source).mean() < 0.5 * np.abs(redrawn - source).mean()


def test_inpaint_repaints_the_masked_area_only(runs):
    source, picture = asset("input.png"), runs.picture("inpaint.api.json")
    with PILImage.open(ASSETS / "inpaint_mask.png") as mask_file:
        mask = np.asarray(mask_file.convert("L")) > 127
    assert classify(picture.astype(np.uint8)) == ("yellow", "circle")  # the prompt's, where the blue square was
    assert np.abs(picture - source)[mask].mean() > 10 * np.abs(picture - source)[~mask].mean()


def test_outpaint_keeps_the_picture_and_draws_the_new_half(runs):
    picture = runs.picture("outpaint.api.json")
    assert picture.shape[:2] == (64, 128)
    assert np.abs(picture[:, :64] - asset("input.png")).mean() < 20
    assert classify(picture[:, 64:].astype(np.uint8)) == ("blue", "square")


def test_loras_and_embeddings_change_the_picture(runs):
    plain = runs.picture("txt2img.api.json")
    one, two = runs.picture("lora.api.json"), runs.picture("multiple_lora.api.json")
    embedded = runs.picture("embedding.api.json")
    for changed in (one, two, embedded):
        assert np.abs(changed - plain).mean() > 0.5 and classify(changed.astype(np.uint8)) == ("red", "circle")
    assert np.abs(two - one).mean() > 0.5
    off = runs.picture("lora.api.json", "--set", "10.strength_model=0", "--set", "10.strength_clip=0")
    assert np.array_equal(off, plain)  # both strengths 0: the model as loaded


def test_area_composition_puts_each_prompt_in_its_area(runs):
    picture = runs.picture("area_composition.api.json")
    assert picture.shape[:2] == (64, 128)
    assert classify(picture[:, 64:].astype(np.uint8)) == ("blue", "square")  # "a blue square" over the right half
    assert classify(picture[:, :64].astype(np.uint8))[0] != "blue"


def test_graphflow_run_reruns_the_png_and_comfyui_finds_its_api_prompt(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "graphflow", "run", str(FIXTURES / "txt2img.ui.json"), *BUILT_IN,
               "--models", str(tmp_path), "--out", str(tmp_path / "first")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [png] = (tmp_path / "first").glob("*.png")
    with PILImage.open(png) as saved:
        prompt, first = json.loads(saved.text["prompt"]), np.asarray(saved.convert("RGB"))
    assert prompt["4"]["class_type"] == "CheckpointLoaderSimple" and prompt["3"]["inputs"]["model"] == ["4", 0]
    again = subprocess.run([sys.executable, "-m", "graphflow", "run", str(png), "--models", str(tmp_path),
                            "--out", str(tmp_path / "again")], capture_output=True, text=True, timeout=300, env=env,
                           cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    [rerun] = (tmp_path / "again").glob("*.png")
    with PILImage.open(rerun) as picture:
        assert np.array_equal(np.asarray(picture.convert("RGB")), first)


def test_without_the_substitution_the_missing_checkpoint_is_named(tmp_path):
    done = subprocess.run([sys.executable, "-m", "graphflow", "validate", str(FIXTURES / "txt2img.api.json"),
                           "--models", str(tmp_path)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "4.ckpt_name" in done.stderr and "v1-5-pruned-emaonly.safetensors" in done.stderr
    assert "comfy.CheckpointLoaderSimple" in done.stderr
