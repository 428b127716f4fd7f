"""The prompt / LoRA / merge examples (lora.json, long_prompt.json, merge.json) run as shipped, and do what they show.

Each runs once as shipped (``shipped`` in conftest.py: LoRAs and embeddings come from ``workflows/assets``,
as ``graphflow run workflows/X.json`` finds them). The checkpoint
is whatever the workflows name, so switching the examples to another model only needs
``python scripts/make_assets.py --checkpoint NAME``; the first test says when that was forgotten.
"""
import importlib.util
import json
import shutil
from pathlib import Path

import torch

from graphflow import Settings
from graphflow.workflow import load
from tests.workflows.conftest import ASSETS, ROOT, WORKFLOWS

EXAMPLES = ("lora.json", "long_prompt.json", "merge.json")
COVERS = set(EXAMPLES)


def document(name: str) -> dict:
    return json.loads((WORKFLOWS / name).read_text())


def checkpoint_of(names=EXAMPLES) -> str:
    """The one checkpoint the examples load (they must agree: the shipped assets fit one model)."""
    found = {node["inputs"]["name"] for name in names for node in document(name)["nodes"].values()
             if node["type"] == "LoadCheckpoint"}
    assert len(found) == 1, f"the examples load different checkpoints: {sorted(found)}"
    return found.pop()


def pixels(report, node="decode") -> torch.Tensor:
    return report.values[node]["image"].pixels


def make_assets_module():
    spec = importlib.util.spec_from_file_location("make_assets", ROOT / "scripts" / "make_assets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------------------ assets

def test_shipped_assets_are_what_make_assets_writes_for_the_workflow_checkpoint(tmp_path):
    from safetensors.torch import load_file

    from nodes.embeddings import load_embedding

    written = make_assets_module().make_assets(checkpoint_of(), tmp_path, tmp_path / "models")
    for name, path in written.items():
        shipped = ASSETS / path.relative_to(tmp_path)
        assert shipped.is_file(), f"{shipped} missing: run scripts/make_assets.py"
        assert shipped.stat().st_size < 200_000, f"{shipped.name} is too big to ship"
        if path.suffix == ".safetensors" and path.parent.name == "loras":
            fresh, ours = load_file(str(path)), load_file(str(shipped))
            assert fresh.keys() == ours.keys(), f"{name} is stale: run scripts/make_assets.py --checkpoint {checkpoint_of()}"
            assert all(torch.equal(fresh[k], ours[k]) for k in fresh), f"{name} is stale: rerun scripts/make_assets.py"
        else:
            assert torch.equal(load_embedding(path), load_embedding(shipped)), f"{name} is stale: rerun scripts/make_assets.py"


def test_user_files_win_over_assets(tmp_path):
    from nodes.lora import find_lora, lora_folders

    settings = Settings(models_dir=tmp_path, asset_dirs=(ASSETS,))
    assert find_lora(lora_folders(settings), "tiny-lora-a") == (ASSETS / "loras" / "tiny-lora-a.safetensors").resolve()
    (tmp_path / "loras").mkdir()
    shutil.copy(ASSETS / "loras" / "tiny-lora-b.safetensors", tmp_path / "loras" / "tiny-lora-a.safetensors")
    assert find_lora(lora_folders(settings), "tiny-lora-a") == (tmp_path / "loras" / "tiny-lora-a.safetensors").resolve()


# ------------------------------------------------------------------------------------------------ lora.json

def without_loras(doc: dict) -> dict:
    """lora.json with both LoraLoaders removed: everything they fed reads the checkpoint instead."""
    doc = json.loads(json.dumps(doc))
    for lora in ("lora_a", "lora_b"):
        del doc["nodes"][lora]
    for node in doc["nodes"].values():
        for value in node["inputs"].values():
            if isinstance(value, dict) and value.get("from") in ("lora_a", "lora_b"):
                value["from"] = "ckpt"
    return doc


def test_lora_stack_changes_the_image_and_strength_zero_is_no_lora(shipped):
    workflow = load(WORKFLOWS / "lora.json")
    with_loras, engine = shipped.report("lora.json"), shipped.engine
    assert with_loras.outputs["save"]["images"], "saves a PNG"
    # two LoRAs stacked, each with its own strengths
    assert with_loras.values["lora_b"]["model"].patches == ("lora:tiny-lora-a:0.8", "lora:tiny-lora-b:0.5")
    assert with_loras.values["lora_b"]["clip"].patches == ("lora:tiny-lora-a:0.6", "lora:tiny-lora-b:1")
    off = {(node, strength): 0.0 for node in ("lora_a", "lora_b") for strength in ("strength_model", "strength_clip")}
    zero = engine.run(workflow.with_values(off))
    plain = engine.run(without_loras(document("lora.json")))
    assert not torch.allclose(pixels(with_loras), pixels(zero), atol=1e-3)
    assert torch.equal(pixels(zero), pixels(plain))


def test_lora_json_runs_from_the_command_line(tmp_path, monkeypatch):
    from graphflow.cli import main

    monkeypatch.chdir(ROOT)
    # as a user types it, from the repo root: the LoRAs are found in workflows/assets (two steps: only plumbing here)
    code = main(["run", "workflows/lora.json", "--models", str(tmp_path / "models"), "--out", str(tmp_path / "out"),
                 "--set", "schedule.steps=2"])
    assert code == 0
    assert [p.name for p in (tmp_path / "out").glob("*.png")] == ["lora_00001.png"]


# ------------------------------------------------------------------------------------------------ long_prompt.json

def test_long_prompt_takes_several_windows(shipped):
    report = shipped.report("long_prompt.json")
    assert report.outputs["save"]["images"]
    tokens = report.values["positive_tokens"]["tokens"]
    positive = report.values["positive"]["conditioning"]
    k = tokens.chunks
    assert k >= 3 and positive.embeds.shape[1] == 77 * k
    words = int(tokens.attention_mask.sum()) - 2 * k  # everything but BOS/EOS/padding
    assert words > 150
    assert "BREAK" in tokens.text[0] and set(tokens.weights.unique().tolist()) - {1.0}, "BREAK and emphasis in use"
    negative_tokens = report.values["negative_tokens"]["tokens"]
    assert int(negative_tokens.attention_mask.sum()) - 2 * negative_tokens.chunks > 77
    assert bool((negative_tokens.input_ids < 0).any()), "the negative prompt names an embedding"
    assert bool((tokens.input_ids < 0).any()), "so does the positive"
    assert set(report.values["embeddings"]["clip"].embeddings) == {"tinyneg", "tinystyle"}


# ------------------------------------------------------------------------------------------------ merge.json

def test_merge_saves_a_checkpoint_that_loads_back_identically(shipped, tmp_path):
    from graphflow.context import CancelToken, RunContext
    from nodes.loaders import LoadCheckpoint

    report, engine = shipped.report("merge.json"), shipped.engine
    assert report.outputs["save"]["images"], "the merged model also draws a picture"
    saved = (engine.settings.output_dir / report.outputs["save_checkpoint"]["checkpoints"][0]["filename"]).resolve()
    assert saved.suffix == ".safetensors" and saved.is_relative_to(engine.settings.output_dir.resolve())
    models = tmp_path / "models"
    (models / "checkpoints").mkdir(parents=True)
    shutil.copy(saved, models / "checkpoints" / "merged.safetensors")
    ctx = RunContext("t", "load", "LoadCheckpoint", Settings(models_dir=models), lambda e: None, CancelToken())
    model, clip, vae = LoadCheckpoint("merged", dtype="float32", device="cpu", ctx=ctx)
    merged = {"unet": (report.values["merge_model"]["model"].unet, model.unet),
              "text encoder": (report.values["merge_clip"]["clip"].text_encoder, clip.text_encoder),
              "vae": (report.values["merge_vae"]["vae"].vae, vae.vae)}
    for part, (ours, loaded) in merged.items():
        ours, loaded = ours.state_dict(), loaded.state_dict()
        assert ours.keys() == loaded.keys(), part
        different = [key for key in ours if not torch.equal(ours[key], loaded[key])]
        assert not different, f"{part}: {different[:3]}"
    original = report.values["ckpt_a"]["model"].unet.state_dict()
    assert any(not torch.equal(original[k], v) for k, v in model.unet.state_dict().items()), "the merge changed the UNet"
