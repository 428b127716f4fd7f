"""nodes.model_folders: ComfyUI and A1111 model folders as they are, and ComfyUI's extra_model_paths.yaml."""
from pathlib import Path

import pytest

from graphflow.context import Settings
from graphflow.errors import NodeInputError
from nodes.comfy.loaders import CheckpointLoaderSimple
from nodes.embeddings import embedding_folders
from nodes.loaders import CHECKPOINT_SUFFIXES, checkpoint_dirs, find_in, is_checkpoint_folder, vae_dirs
from nodes.lora import find_lora, lora_folders
from nodes.model_folders import kind_folders
from nodes.upscale import model_path


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_an_a1111_install_is_read_by_its_folder_names(tmp_path):
    models = tmp_path / "webui" / "models"
    ckpt = touch(models / "Stable-diffusion" / "sd15" / "dream.safetensors")
    lora = touch(models / "Lora" / "style.safetensors")
    lyco = touch(models / "LyCORIS" / "loha.safetensors")
    touch(models / "VAE" / "ft-mse.safetensors")
    upscaler = touch(models / "ESRGAN" / "4x.pth")
    touch(tmp_path / "webui" / "embeddings" / "bad.pt")
    settings = Settings(models_dir=models)
    assert find_in("sd15/dream", checkpoint_dirs(models), CHECKPOINT_SUFFIXES, is_checkpoint_folder) == ckpt
    assert find_lora(lora_folders(settings), "style") == lora and find_lora(lora_folders(settings), "loha") == lyco
    assert models / "VAE" in vae_dirs(models)
    assert model_path("4x.pth", settings) == upscaler
    assert tmp_path / "webui" / "embeddings" in embedding_folders(settings)


def test_comfyuis_layout_is_graphflows_and_the_first_folder_is_always_named(tmp_path):
    models = tmp_path / "ComfyUI" / "models"
    assert kind_folders(models, "loras") == [models / "loras"]  # nothing there yet: messages still name it
    touch(models / "checkpoints" / "sd15" / "a.safetensors")
    problems = CheckpointLoaderSimple.__graphflow_node__.preflight({"ckpt_name": "sd15\\a.safetensors"},
                                                                   Settings(models_dir=models))
    assert problems == []


def test_extra_model_paths_yaml_adds_folders_per_kind(tmp_path):
    comfy = tmp_path / "ComfyUI"
    webui = tmp_path / "webui"
    (comfy / "models").mkdir(parents=True)
    (comfy / "adapters").mkdir()
    lora = touch(webui / "models" / "Lora" / "sub" / "x.safetensors")
    touch(tmp_path / "shared" / "ckpts" / "big.safetensors")
    (comfy / "extra_model_paths.yaml").write_text(
        "a111:\n"
        "    base_path: ../webui/\n"
        "    checkpoints: models/Stable-diffusion\n"
        "    loras: |\n"
        "         models/Lora\n"
        "         models/LyCORIS\n"
        "other:\n"
        f"    checkpoints: {tmp_path / 'shared' / 'ckpts'}\n"
        "    t2i_adapter: adapters\n")
    models = comfy / "models"
    assert find_lora(lora_folders(Settings(models_dir=models)), "sub/x") == lora
    folders = kind_folders(models, "checkpoints")
    assert folders[0] == models / "checkpoints" and tmp_path / "shared" / "ckpts" in folders
    assert kind_folders(models, "controlnet") == [models / "controlnet", comfy / "adapters"]  # t2i_adapter is controlnet


def test_a_broken_yaml_is_named(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "extra_model_paths.yaml").write_text("a111: [unclosed\n")
    with pytest.raises(NodeInputError, match="extra_model_paths.yaml is not a readable"):
        kind_folders(tmp_path / "models", "loras")
    (tmp_path / "extra_model_paths.yaml").write_text("- just a list\n")
    with pytest.raises(NodeInputError, match="must be a section"):
        kind_folders(tmp_path / "models", "loras")
