"""comfy.CheckpointLoaderSimple, VAELoader, LoraLoader, LoraLoaderModelOnly, UpscaleModelLoader: graphflow's loaders
under ComfyUI's input names (errors and missing-file checks name ComfyUI's inputs)."""
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from graphflow.errors import NodeInputError
from nodes.comfy.loaders import (CheckpointLoaderSimple, LoraLoader, LoraLoaderModelOnly, UpscaleModelLoader,
                                 VAELoader)
from nodes.loaders import LoadCheckpoint
from nodes.tiny_assets import ensure_assets
from tests.nodes.runctx import run_node

ASSETS = Path(__file__).resolve().parents[3] / "workflows" / "assets"


@pytest.fixture
def ctx(stage_ctx):
    context, _ = stage_ctx
    context.settings = replace(context.settings, asset_dirs=(ASSETS,))
    ensure_assets(context.settings.models_dir)  # LoRAs made for the tiny model, found before the assets' ones
    return context


def spec(fn):
    return fn.__graphflow_node__


def test_checkpoint_loader_loads_the_built_in_model_by_name(ctx):
    model, clip, vae = run_node(CheckpointLoaderSimple, ctx=ctx, ckpt_name="tiny-sd")
    assert model.name == clip.name == vae.name == "tiny-sd" and vae.downscale == 2
    assert list(spec(CheckpointLoaderSimple).outputs) == ["MODEL", "CLIP", "VAE"]
    assert spec(CheckpointLoaderSimple).fingerprint({"ckpt_name": "tiny-sd"}, ctx.settings) == \
        spec(LoadCheckpoint).fingerprint({"name": "tiny-sd"}, ctx.settings)


def test_missing_models_are_named_by_comfyuis_input_before_anything_runs(ctx):
    for loader, name in ((CheckpointLoaderSimple, "ckpt_name"), (VAELoader, "vae_name"), (LoraLoader, "lora_name"),
                         (UpscaleModelLoader, "model_name")):
        [problem] = spec(loader).preflight({name: "sd15\\missing.safetensors"}, ctx.settings)
        assert problem.input == name and problem.received == "sd15/missing.safetensors"
    with pytest.raises(NodeInputError) as caught:
        run_node(VAELoader, ctx=ctx, vae_name="nothing.safetensors")
    assert caught.value.input == "vae_name"


def test_sub_folder_names_resolve_with_either_separator(ctx, tmp_path):
    loras = ctx.settings.models_dir / "loras" / "style"
    loras.mkdir(parents=True, exist_ok=True)
    (loras / "a.safetensors").write_bytes((ASSETS / "loras" / "tiny-lora-a.safetensors").read_bytes())
    for name in ("style/a.safetensors", "style\\a.safetensors"):
        assert spec(LoraLoader).preflight({"lora_name": name}, ctx.settings) == []


def weights(module):
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def test_lora_loader_patches_both_and_model_only_patches_the_unet(ctx, sd_model, sd_clip):
    model, clip = run_node(LoraLoader, ctx=ctx, model=sd_model, clip=sd_clip, lora_name="tiny-lora-a.safetensors",
                           strength_model=1.0, strength_clip=1.0)
    assert not torch.equal(weights(model.unet), weights(sd_model.unet))
    assert not torch.equal(weights(clip.text_encoder), weights(sd_clip.text_encoder))
    only = run_node(LoraLoaderModelOnly, ctx=ctx, model=sd_model, lora_name="tiny-lora-a.safetensors", strength_model=1.0)
    assert torch.equal(weights(only.unet), weights(model.unet)) and only.patches == model.patches
    assert run_node(LoraLoader, ctx=ctx, model=sd_model, clip=sd_clip, lora_name="anything", strength_model=0,
                    strength_clip=0) == (sd_model, sd_clip)


def test_upscale_model_loader(ctx):
    model = run_node(UpscaleModelLoader, ctx=ctx, model_name="toy-compact-x4.safetensors")
    assert model.scale == 4
