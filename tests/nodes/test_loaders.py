"""LoadCheckpoint / LoadVAE nodes: name resolution, single-file round trip, errors a user can act on."""
import os
import shutil

import pytest
import torch
from safetensors.torch import save_file

from graphflow import Engine, Registry
from graphflow.context import Settings
from graphflow.errors import NodeInputError, WorkflowInvalid
from graphflow.node import Input, node, spec_of
from nodes import checkpoints as ck
from nodes import loaders
from nodes.builtin_models import tiny_sd_folder
from nodes.loaders import LoadCheckpoint, LoadVAE
from nodes.values import Clip, Model, Vae

from .runctx import run_node
from .test_checkpoints import as_values, assert_same_weights, unet_output


def test_tiny_builtin_loads_as_sd1_on_cpu(loader_ctx):
    model, clip, vae = run_node(LoadCheckpoint, loader_ctx, name="tiny-sd")
    assert isinstance(model, Model) and isinstance(clip, Clip) and isinstance(vae, Vae)
    assert (model.family, model.prediction_type, clip.family) == ("sd1", "epsilon", "sd1")
    assert model.scheduler_config["prediction_type"] == "epsilon"
    assert (model.device.type, model.dtype) == ("cpu", torch.float32)
    assert not model.is_inpainting and vae.downscale == 2
    assert clip.tokenizer("a cat").input_ids[0] == 49406


def test_inpainting_builtin(loader_ctx):
    model, _, _ = run_node(LoadCheckpoint, loader_ctx, name="tiny-sd-inpainting")
    assert model.is_inpainting


def test_prediction_type_override(loader_ctx):
    model, _, _ = run_node(LoadCheckpoint, loader_ctx, name="tiny-sd", prediction_type="v_prediction")
    assert model.prediction_type == model.scheduler_config["prediction_type"] == "v_prediction"


def test_explicit_dtype(loader_ctx):
    model, clip, vae = run_node(LoadCheckpoint, loader_ctx, name="tiny-sd", dtype="bfloat16", device="cpu")
    assert model.dtype == torch.bfloat16
    assert {p.dtype for p in list(clip.text_encoder.parameters()) + list(vae.vae.parameters())} == {torch.bfloat16}


def test_single_file_round_trip_through_the_node(loader_ctx, models_dir, tiny_components):
    """tiny diffusers folder → save_single_file → LoadCheckpoint: the same weights and the same UNet function."""
    ck.save_single_file(*as_values(tiny_components), models_dir / "checkpoints" / "tiny-single.safetensors")
    model, clip, vae = run_node(LoadCheckpoint, loader_ctx, name="tiny-single")
    assert_same_weights(tiny_components.unet, model.unet)
    assert_same_weights(tiny_components.text_encoder, clip.text_encoder)
    assert_same_weights(tiny_components.vae, vae.vae)
    assert torch.equal(unet_output(model.unet), unet_output(tiny_components.unet))
    assert (model.family, model.name) == ("sd1", "tiny-single")


def test_diffusers_folder_in_models_dir(loader_ctx, models_dir):
    shutil.copytree(tiny_sd_folder(), models_dir / "my-model")
    model, _, _ = run_node(LoadCheckpoint, loader_ctx, name="my-model")
    assert model.unet.config.cross_attention_dim == 32 and model.family == "sd1"


def test_names_resolve_with_or_without_extension_and_in_subfolders(models_dir):
    (models_dir / "a.safetensors").write_bytes(b"x")
    (models_dir / "checkpoints" / "b.ckpt").write_bytes(b"x")
    (models_dir / "checkpoints" / "sub").mkdir()
    (models_dir / "checkpoints" / "sub" / "c.safetensors").write_bytes(b"x")
    dirs = loaders.checkpoint_dirs(models_dir)

    def resolve(name):
        return loaders.resolve(name, dirs, loaders.CHECKPOINT_SUFFIXES, loaders.is_checkpoint_folder)

    assert resolve("a") == resolve("a.safetensors") == models_dir / "a.safetensors"
    assert resolve("b") == models_dir / "checkpoints" / "b.ckpt"
    assert resolve("sub/c") == models_dir / "checkpoints" / "sub" / "c.safetensors"
    assert resolve("tiny-sd") == tiny_sd_folder()


def test_unknown_name_lists_what_is_available(loader_ctx, models_dir):
    (models_dir / "checkpoints" / "real-model.safetensors").write_bytes(b"x")
    (models_dir / "notes.txt").write_text("not a model")
    with pytest.raises(NodeInputError) as caught:
        run_node(LoadCheckpoint, loader_ctx, name="no-such-model")
    assert caught.value.input == "name"
    assert caught.value.received == "no-such-model"
    assert {"tiny-sd", "tiny-sd-inpainting", "real-model.safetensors"} <= set(caught.value.expected)
    assert "notes.txt" not in caught.value.expected


@pytest.mark.parametrize("name", ["../secret", "checkpoints/../../etc/passwd", "/etc/passwd", "C:\\models\\x", "..\\x", "", "  "])
def test_names_cannot_leave_the_models_dir(loader_ctx, name):
    with pytest.raises(NodeInputError, match="relative path inside the models directory") as caught:
        run_node(LoadCheckpoint, loader_ctx, name=name)
    assert caught.value.input == "name"


@pytest.mark.parametrize("link", ["escape.safetensors", "escape"])  # the name as given, or found by its suffix
def test_a_symlink_out_of_the_models_dir_is_refused(loader_ctx, models_dir, tmp_path, link):
    outside = tmp_path / "elsewhere" / "model.safetensors"
    outside.parent.mkdir()
    outside.write_bytes(b"x")
    (models_dir / "escape.safetensors").symlink_to(outside)
    with pytest.raises(NodeInputError, match="relative path inside the models directory.*symlink") as caught:
        run_node(LoadCheckpoint, loader_ctx, name=link)
    assert caught.value.input == "name"


def test_a_file_that_is_not_a_checkpoint(loader_ctx, models_dir):
    (models_dir / "junk.safetensors").write_bytes(b"definitely not tensors")
    with pytest.raises(NodeInputError, match="junk cannot be loaded: .*neither a safetensors file") as caught:
        run_node(LoadCheckpoint, loader_ctx, name="junk")
    assert caught.value.input == "name"


def test_tensor_file_without_a_unet(loader_ctx, models_dir):
    save_file({"weight": torch.zeros(2)}, str(models_dir / "lora.safetensors"))
    with pytest.raises(NodeInputError, match="no UNet weights"):
        run_node(LoadCheckpoint, loader_ctx, name="lora")


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the message for a missing GPU")
def test_unavailable_device(loader_ctx):
    with pytest.raises(NodeInputError) as caught:
        run_node(LoadCheckpoint, loader_ctx, name="tiny-sd", device="cuda")
    assert caught.value.input == "device" and "cpu" in caught.value.expected


def test_auto_device_and_dtype_rules():
    assert loaders.pick_dtype("auto", torch.device("cpu")) == torch.float32
    assert loaders.pick_dtype("auto", torch.device("cuda")) == torch.float16
    assert loaders.pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


# ------------------------------------------------------------------------------------------- fingerprint

def test_fingerprint_follows_the_file(models_dir):
    fingerprint = spec_of(LoadCheckpoint).fingerprint
    settings = Settings(models_dir=models_dir)
    path = models_dir / "m.safetensors"
    path.write_bytes(b"one")
    first = fingerprint({"name": "m"}, settings)
    assert fingerprint({"name": "m"}, settings) == first
    os.utime(path, ns=(1, 1))
    assert fingerprint({"name": "m"}, settings) != first
    second = fingerprint({"name": "m"}, settings)
    path.with_suffix(".yaml").write_text("model: {params: {parameterization: v}}")
    assert fingerprint({"name": "m"}, settings) != second  # the sidecar can change the prediction type
    assert fingerprint({"name": "tiny-sd"}, settings) == fingerprint({"name": "tiny-sd"}, Settings())  # no file read
    for name in ("missing", "../x"):  # the run stops before any node runs, as the node itself would
        with pytest.raises(NodeInputError) as error:
            fingerprint({"name": name}, settings)
        assert error.value.input == "name"


def test_loader_nodes_keep_results_in_the_model_pool():
    assert spec_of(LoadCheckpoint).pool == "model" and spec_of(LoadVAE).pool == "model"
    assert spec_of(LoadCheckpoint).outputs == {"model": "MODEL", "clip": "CLIP", "vae": "VAE"}


def test_catalog_describes_the_inputs():
    registry = Registry()
    registry.add_module(loaders)
    inputs = registry.catalog()["LoadCheckpoint"]["inputs"]
    assert inputs["prediction_type"]["schema"]["enum"] == ["auto", "epsilon", "v_prediction"]
    assert inputs["name"]["default"] == "toy-shapes" and "models/checkpoints" in inputs["name"]["schema"]["description"]
    assert registry.catalog()["LoadVAE"]["inputs"]["name"]["required"]


@node(output=True)
def ShowFamily(model=Input("MODEL")):
    """Test output node: reports the family of a MODEL."""
    return {"family": model.family}


def test_engine_loads_once_and_shares_the_model(models_dir, tmp_path):
    registry = Registry()
    registry.add_module(loaders)
    registry.add(spec_of(ShowFamily))
    engine = Engine(registry, Settings(models_dir=models_dir, input_dir=tmp_path, output_dir=tmp_path))

    def workflow(name):
        return {"graphflow": 1, "nodes": {"ckpt": {"type": "LoadCheckpoint", "inputs": {"name": name}},
                                          "show": {"type": "ShowFamily", "inputs": {"model": {"from": "ckpt", "output": "model"}}}}}

    first = engine.run(workflow("tiny-sd"))
    second = engine.run(workflow("tiny-sd"))
    assert first.outputs["show"] == {"family": "sd1"}
    assert "ckpt" in first.executed and "ckpt" in second.cached
    assert second.values["ckpt"]["model"].unet is first.values["ckpt"]["model"].unet
    with pytest.raises(WorkflowInvalid) as caught:  # preflight: refused before anything runs
        engine.run(workflow("nope"))
    [issue] = caught.value.issues
    assert issue.input == "name" and "tiny-sd" in issue.expected


# ------------------------------------------------------------------------------------------------ LoadVAE

def test_load_vae_from_the_vae_folder(loader_ctx, models_dir, tiny_components):
    vae = tiny_components.vae
    tensors = {k: v.contiguous() for k, v in ck.vae_to_original(vae.state_dict(), dict(vae.config)).items()}
    save_file(tensors, str(models_dir / "vae" / "vae-ft-tiny.safetensors"))
    loaded = run_node(LoadVAE, loader_ctx, name="vae-ft-tiny")
    assert isinstance(loaded, Vae) and loaded.name == "vae-ft-tiny"
    assert_same_weights(vae, loaded.vae)


def test_load_vae_from_diffusers_folders(loader_ctx, models_dir, tiny_components):
    shutil.copytree(tiny_sd_folder() / "vae", models_dir / "vae" / "tiny-vae")
    assert_same_weights(tiny_components.vae, run_node(LoadVAE, loader_ctx, name="tiny-vae").vae)
    assert_same_weights(tiny_components.vae, run_node(LoadVAE, loader_ctx, name="tiny-sd").vae)  # a pipeline folder's vae/


def test_load_vae_errors_name_the_input(loader_ctx, models_dir):
    (models_dir / "vae" / "broken.pt").write_bytes(b"nope")
    with pytest.raises(NodeInputError) as caught:
        run_node(LoadVAE, loader_ctx, name="missing-vae")
    assert caught.value.input == "name" and "broken.pt" in caught.value.expected
    with pytest.raises(NodeInputError, match="broken cannot be loaded") as caught:
        run_node(LoadVAE, loader_ctx, name="broken")
    assert caught.value.input == "name"


@pytest.mark.parametrize("loader, folder, marker", [("LoadCheckpoint", "checkpoints", "model_index.json"),
                                                     ("LoadVAE", "vae", "config.json")])
def test_a_model_folder_with_a_symlink_out_is_refused_like_a_single_file(loader_ctx, models_dir, tmp_path, loader,
                                                                         folder, marker):
    """One rule for every loader: what it reads stays inside the models directory, also inside a model folder."""
    outside = tmp_path / "elsewhere" / "weights.safetensors"
    outside.parent.mkdir()
    outside.write_bytes(b"not yours")
    model = models_dir / folder / "linked"
    (model / "unet").mkdir(parents=True)
    (model / marker).write_text("{}")
    (model / "unet" / "diffusion_pytorch_model.safetensors").symlink_to(outside)
    with pytest.raises(NodeInputError, match="'unet/diffusion_pytorch_model.safetensors', a symlink that leads out") as caught:
        run_node(getattr(loaders, loader), loader_ctx, name="linked")
    assert caught.value.input == "name"
    (model / "unet" / "diffusion_pytorch_model.safetensors").unlink()  # a link that stays inside is fine
    (model / "unet" / "diffusion_pytorch_model.safetensors").symlink_to(model / marker)
    loaders.check_contents_inside(models_dir / folder, model)
