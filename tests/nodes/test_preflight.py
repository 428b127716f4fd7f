"""Preflight: every file a workflow names (checkpoint, VAE, LoRA, embedding, upscaler, image, mask) is looked up
by validation with the node's own resolver, before anything runs, and every missing one is reported at once."""
import json
from pathlib import Path

import pytest

from graphflow import Engine, Settings, WorkflowInvalid
from graphflow.workflow import load, parse

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
ASSETS = WORKFLOWS / "assets"


@pytest.fixture
def settings(tmp_path):
    """Empty user folders, plus the shipped assets folder as the CLI adds it."""
    for sub in ("models", "inputs"):
        (tmp_path / sub).mkdir()
    return Settings(models_dir=tmp_path / "models", input_dir=tmp_path / "inputs",
                    output_dir=tmp_path / "outputs", asset_dirs=(ASSETS,))


def issues(engine, workflow):
    with pytest.raises(WorkflowInvalid) as err:
        engine.validate(workflow)
    return {(i.node, i.input): i for i in err.value.issues}


def shipped(name, **values):
    workflow = load(WORKFLOWS / name)
    return workflow.with_values({tuple(key.split(".")): value for key, value in values.items()})


@pytest.mark.parametrize("name", sorted(p.name for p in WORKFLOWS.glob("*.json")))
def test_every_shipped_workflow_passes_preflight_with_its_assets(settings, name):
    Engine(settings=settings).validate(load(WORKFLOWS / name))


def test_missing_checkpoint_image_and_lora_are_all_reported_and_nothing_runs(settings):
    events = []
    engine = Engine(settings=settings)
    doc = json.loads((WORKFLOWS / "img2img.json").read_text())
    doc["nodes"]["ckpt"]["inputs"]["name"] = "toy-shape"
    doc["nodes"]["image"]["inputs"]["name"] = "inptu.png"
    doc["nodes"]["lora"] = {"type": "LoraLoader", "inputs": {"model": {"from": "ckpt", "output": "model"},
                                                             "clip": {"from": "ckpt", "output": "clip"}, "name": "tiny-lora-c"}}
    doc["nodes"]["positive"]["inputs"]["clip"] = {"from": "lora", "output": "clip"}
    with pytest.raises(WorkflowInvalid) as err:
        engine.run(parse(doc), on_event=events.append)
    found = {(i.node, i.input): i for i in err.value.issues}
    assert set(found) == {("ckpt", "name"), ("image", "name"), ("lora", "name")}
    assert found["ckpt", "name"].expected[0] == "toy-shapes" and "did you mean 'toy-shapes'" in found["ckpt", "name"].message
    assert found["image", "name"].expected[0] == "input.png"
    assert sorted(found["lora", "name"].expected) == ["tiny-lora-a", "tiny-lora-b"]
    assert events == [] and len(engine.cache) == 0


def test_a_wrong_upscaler_fails_at_validation_not_after_the_first_pass(settings):
    found = issues(Engine(settings=settings), shipped("hires_fix_model.json", **{"upscaler.name": "RealESRGAN_x4plus.pth"}))
    [(where, issue)] = found.items()
    assert where == ("upscaler", "name") and issue.expected == ["toy-compact-x4.safetensors"]


def test_missing_vae_embeddings_and_mask_are_named_each(settings):
    engine = Engine(settings=settings)
    with pytest.raises(WorkflowInvalid) as err:
        engine.validate(shipped("long_prompt.json", **{"embeddings.names": "tinyneg, nope, tinystyl"}))
    assert [(i.node, i.input, i.received) for i in err.value.issues] == [
        ("embeddings", "names", "nope"), ("embeddings", "names", "tinystyl")]
    assert err.value.issues[1].expected[0] == "tinystyle"
    found = issues(engine, shipped("inpaint.json", **{"image.mask": "mask.png"}))
    assert list(found) == [("image", "mask")] and found["image", "mask"].expected[0] == "inpaint_mask.png"
    doc = json.loads((WORKFLOWS / "txt2img.json").read_text())
    doc["nodes"]["vae"] = {"type": "LoadVAE", "inputs": {"name": "vae-ft-mse"}}
    doc["nodes"]["decode"]["inputs"]["vae"] = {"from": "vae", "output": "vae"}
    found = issues(engine, parse(doc))
    assert "no model named 'vae-ft-mse'" in found["vae", "name"].message


def test_built_in_models_pass_without_being_built(settings, monkeypatch):
    import nodes.loaders as loaders

    monkeypatch.setattr(loaders, "tiny_sd_folder", lambda **_: pytest.fail("preflight built the tiny model"))
    Engine(settings=settings).validate(shipped("txt2img.json", **{"ckpt.name": "tiny-sd"}))
    Engine(settings=settings).validate(shipped("txt2img.json", **{"ckpt.name": "tiny-sd-inpainting"}))


def test_a_model_file_in_the_users_folder_passes_and_an_unsafe_name_is_a_bad_value(settings):
    (settings.models_dir / "checkpoints").mkdir()
    (settings.models_dir / "checkpoints" / "mine.safetensors").write_bytes(b"")
    engine = Engine(settings=settings)
    engine.validate(shipped("txt2img.json", **{"ckpt.name": "mine"}))
    found = issues(engine, shipped("txt2img.json", **{"ckpt.name": "../mine"}))
    assert list(found) == [("ckpt", "name")] and "relative path" in found["ckpt", "name"].message


def test_the_cli_exits_2_naming_all_three_missing_files_and_writes_nothing(tmp_path):
    import os
    import subprocess
    import sys

    doc = json.loads((WORKFLOWS / "lora.json").read_text())
    doc["nodes"]["ckpt"]["inputs"]["name"] = "toy-shape"
    doc["nodes"]["lora_b"]["inputs"]["name"] = "tiny-lora-c"
    doc["nodes"]["image"] = {"type": "LoadImage", "inputs": {"name": "inptu.png"}}
    doc["nodes"]["show"] = {"type": "SaveImage", "inputs": {"images": {"from": "image", "output": "image"}}}
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "assets").symlink_to(ASSETS)
    path = tmp_path / "workflows" / "broken.json"
    path.write_text(json.dumps(doc))
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-m", "graphflow", "run", str(path)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(root)})
    assert result.returncode == 2, result.stderr
    assert "3 problem(s)" in result.stderr and "Traceback" not in result.stderr
    for line in ("ckpt.name: no model named 'toy-shape'", "lora_b.name: no LoRA named 'tiny-lora-c'",
                 "image.name: no such file in the input folders"):
        assert line in result.stderr
    assert not (tmp_path / "outputs").exists()
