"""LoadControlNet and nodes.checkpoints.controlnet: the original layout ↔ diffusers, strict offline loading.

Full-size ControlNets are only built on the meta device; everything that runs numbers uses the tiny one."""
import pytest
import torch
from accelerate import init_empty_weights
from safetensors.torch import save_file

from graphflow.context import Settings
from graphflow.errors import NodeInputError
from graphflow.node import spec_of
from nodes import checkpoints as ck
from nodes.builtin_models import build_tiny_controlnet
from nodes.checkpoints.controlnet import (CONTROLNET_CONFIGS, controlnet_to_original, derive_controlnet_config,
                                          load_controlnet_file)
from nodes.controlnet import LoadControlNet

from .runctx import run_node
from .test_checkpoints import assert_same_weights

# ------------------------------------------------------------------- real layouts, on the meta device

REAL_SD15_KEYS = {  # tensors of lllyasviel's control_v11p_sd15_canny.pth (bare keys) with their shapes
    "input_hint_block.0.weight": (16, 3, 3, 3),
    "input_hint_block.2.weight": (16, 16, 3, 3),
    "input_hint_block.4.weight": (32, 16, 3, 3),
    "input_hint_block.10.weight": (96, 96, 3, 3),
    "input_hint_block.12.weight": (256, 96, 3, 3),
    "input_hint_block.14.weight": (320, 256, 3, 3),
    "zero_convs.0.0.weight": (320, 320, 1, 1),
    "zero_convs.5.0.weight": (640, 640, 1, 1),
    "zero_convs.11.0.bias": (1280,),
    "middle_block_out.0.weight": (1280, 1280, 1, 1),
    "time_embed.0.weight": (1280, 320),
    "input_blocks.0.0.weight": (320, 4, 3, 3),
    "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768),
    "input_blocks.3.0.op.weight": (320, 320, 3, 3),
    "input_blocks.11.0.out_layers.3.weight": (1280, 1280, 3, 3),
    "middle_block.1.proj_in.weight": (1280, 1280, 1, 1),
    "middle_block.2.emb_layers.1.weight": (1280, 1280),
}


@pytest.fixture(scope="module", params=list(CONTROLNET_CONFIGS))
def full_size(request):
    """A full-size ControlNet from a shipped config, built without memory, and its original-layout weights."""
    from diffusers import ControlNetModel

    config = ck.read_json(ck.CONFIGS / CONTROLNET_CONFIGS[request.param] / "config.json")
    with init_empty_weights():
        module = ControlNetModel.from_config(config)
    return request.param, config, module, controlnet_to_original(module.state_dict(), dict(module.config))


def test_written_layout_has_the_published_key_names_and_shapes(full_size):
    family, _, module, original = full_size
    assert len(original) == len(module.state_dict()) == {"sd1": 340, "sd2": 340, "sdxl": 844}[family]  # one to one
    if family == "sd1":
        for key, expected in REAL_SD15_KEYS.items():
            assert tuple(original[key].shape) == expected, key
    elif family == "sd2":  # Linear projections and 1024-wide text
        assert tuple(original["input_blocks.1.1.proj_in.weight"].shape) == (320, 320)
        assert tuple(original["input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"].shape) == (320, 1024)
    else:  # SDXL: 3 levels, 2048-wide text, depth 10 in the last level, the added embedding of pooled text + 6 ids
        assert tuple(original["input_blocks.7.1.transformer_blocks.9.attn2.to_k.weight"].shape) == (1280, 2048)
        assert tuple(original["label_emb.0.0.weight"].shape) == (1280, 2816)
        assert tuple(original["zero_convs.8.0.weight"].shape) == (1280, 1280, 1, 1)
        assert "input_blocks.1.1.proj_in.weight" not in original  # the first level has no attention


def test_sizes_read_from_real_layouts_match_the_shipped_configs(full_size):
    _, config, _, original = full_size
    derived = derive_controlnet_config(original)
    assert derived == {k: config[k] for k in derived}
    assert ck.size_defaults("unet", config, derived) == {}


def test_diffusers_own_converter_reads_our_layout_back(full_size):
    """An independent implementation (diffusers.loaders.single_file_utils) agrees with our key table."""
    from diffusers.loaders import single_file_utils as sfu

    _, _, module, original = full_size
    # diffusers' ControlNet converter has no rule for SDXL's added embedding; its UNet table's rule is ours
    added = {diffusers: original_name for diffusers, original_name in
             sfu.DIFFUSERS_TO_LDM_MAPPING["unet"]["addition_embed_type"].items() if diffusers in module.state_dict()}
    assert all(original_name in original for original_name in added.values())
    for state_dict in (original, {"control_model." + k: v for k, v in original.items()}):
        converted = sfu.convert_controlnet_checkpoint(state_dict, dict(module.config))
        expected = {k: v for k, v in module.state_dict().items() if k not in added}
        assert sorted(converted) == sorted(expected)
        assert all(tuple(converted[k].shape) == tuple(expected[k].shape) for k in expected)


# --------------------------------------------------------------------------------- tiny single files

@pytest.fixture(scope="module")
def tiny():
    return build_tiny_controlnet()


def original_file(module, path, prefix="", extra=None):
    tensors = {prefix + k: v.contiguous() for k, v in controlnet_to_original(module.state_dict(), dict(module.config)).items()}
    save_file({**tensors, **(extra or {})}, str(path))
    return path


@torch.no_grad()
def residuals(module):
    g = torch.Generator().manual_seed(0)
    sample, hint = torch.randn(1, 4, 16, 16, generator=g), torch.rand(1, 3, 32, 32, generator=g)
    context = torch.randn(1, 77, module.config.cross_attention_dim, generator=g)
    down, mid = module(sample, torch.tensor([500]), encoder_hidden_states=context, controlnet_cond=hint, return_dict=False)
    return torch.cat([d.flatten() for d in down] + [mid.flatten()])


@pytest.mark.parametrize("prefix", ["control_model.", ""])
def test_original_single_file_round_trip_is_exact(tiny, tmp_path, prefix):
    loaded, family = load_controlnet_file(original_file(tiny, tmp_path / "cn.safetensors", prefix))
    assert family == "sd1"
    assert_same_weights(loaded, tiny)
    assert torch.equal(residuals(loaded), residuals(tiny))


def test_the_sd_model_inside_a_first_release_file_is_not_part_of_it(tiny, tmp_path):
    """control_sd15_*.pth hold the SD model they were trained with beside ``control_model.*``."""
    extra = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(32, 4, 3, 3), "alphas_cumprod": torch.zeros(1000)}
    loaded, _ = load_controlnet_file(original_file(tiny, tmp_path / "full.safetensors", "control_model.", extra))
    assert_same_weights(loaded, tiny)


def test_pth_files_load_with_weights_only(tiny, tmp_path):
    path = tmp_path / "control_v11p_tiny.pth"
    torch.save(controlnet_to_original(tiny.state_dict(), dict(tiny.config)), path)
    assert_same_weights(load_controlnet_file(path)[0], tiny)


def test_a_sidecar_yaml_says_whether_it_pools_over_the_picture(tiny, tmp_path):
    path = original_file(tiny, tmp_path / "control_v11e_tiny_shuffle.safetensors")
    assert not load_controlnet_file(path)[0].config.global_pool_conditions
    path.with_suffix(".yaml").write_text("model:\n  params:\n    control_stage_config:\n      params:\n"
                                         "        global_average_pooling: True\n")
    assert load_controlnet_file(path)[0].config.global_pool_conditions
    path.with_suffix(".yaml").write_text("model: 3\n")
    with pytest.raises(ck.CheckpointError, match="not a ControlNet config"):
        load_controlnet_file(path)


@pytest.mark.parametrize("change, message", [
    (lambda t: t.pop("zero_convs.3.0.weight"), "missing controlnet_down_blocks.3.weight"),
    (lambda t: t.update({"zero_convs.6.0.weight": torch.zeros(64, 64, 1, 1)}), "unexpected zero_convs.6.0.weight"),
    (lambda t: t.update({"middle_block_out.0.weight": torch.zeros(64, 32, 1, 1)}), "controlnet_mid_block.weight"),
    (lambda t: t.pop("input_hint_block.6.weight"), "input_hint_block.6.weight is missing"),
    (lambda t: [t.pop(f"input_hint_block.6.{p}") for p in ("weight", "bias")], "hint encoder"),
])
def test_a_wrong_file_is_an_error_never_random_weights(tiny, tmp_path, change, message):
    tensors = controlnet_to_original(tiny.state_dict(), dict(tiny.config))
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    change(tensors)
    save_file(tensors, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ck.CheckpointError, match="ControlNet") as caught:
        load_controlnet_file(tmp_path / "bad.safetensors")
    assert message in str(caught.value)


def test_files_that_are_not_controlnets(tiny, tmp_path):
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}, str(tmp_path / "sd.safetensors"))
    with pytest.raises(ck.CheckpointError, match="LoadCheckpoint"):
        load_controlnet_file(tmp_path / "sd.safetensors")
    save_file({"lora_controlnet": torch.zeros(1), "input_hint_block.0.weight": torch.zeros(1)},
              str(tmp_path / "control-lora.safetensors"))
    with pytest.raises(ck.CheckpointError, match="Control-LoRA"):
        load_controlnet_file(tmp_path / "control-lora.safetensors")
    save_file({"encoder.conv_in.weight": torch.zeros(1)}, str(tmp_path / "vae.safetensors"))
    with pytest.raises(ck.CheckpointError, match="not a ControlNet"):
        load_controlnet_file(tmp_path / "vae.safetensors")


def test_a_single_file_with_diffusers_keys_loads_exactly(tiny, tmp_path):
    """How most SDXL ControlNets ship (diffusion_pytorch_model.safetensors without its config.json): the block
    structure read from the diffusers names, the sizes from the weights, every tensor mapped."""
    save_file({k: v.contiguous() for k, v in tiny.state_dict().items()}, str(tmp_path / "diffusers.safetensors"))
    loaded, family = load_controlnet_file(tmp_path / "diffusers.safetensors")
    assert family == "sd1"
    assert_same_weights(loaded, tiny)
    assert torch.equal(residuals(loaded), residuals(tiny))
    weights = {k: v.contiguous() for k, v in tiny.state_dict().items() if k != "controlnet_mid_block.bias"}
    save_file(weights, str(tmp_path / "incomplete.safetensors"))
    with pytest.raises(ck.CheckpointError, match="missing controlnet_mid_block.bias"):
        load_controlnet_file(tmp_path / "incomplete.safetensors")


# ------------------------------------------------------------------------------------ the node

@pytest.fixture
def controlnet_dir(models_dir):
    folder = models_dir / "controlnet"
    folder.mkdir()
    return folder


def test_builtin_tiny_controlnet(loader_ctx, tiny):
    control_net = run_node(LoadControlNet, loader_ctx, name="tiny-sd-controlnet", device="cpu")
    assert (control_net.family, control_net.name, control_net.downscale) == ("sd1", "tiny-sd-controlnet", 2)
    assert_same_weights(control_net.module, tiny)  # built deterministically: the folder holds build_tiny_controlnet()


def test_files_and_folders_in_models_controlnet(loader_ctx, controlnet_dir, tiny):
    original_file(tiny, controlnet_dir / "canny.safetensors", "control_model.")
    tiny.save_pretrained(controlnet_dir / "depth-diffusers")
    for name in ("canny", "canny.safetensors", "depth-diffusers"):
        control_net = run_node(LoadControlNet, loader_ctx, name=name, device="cpu", dtype="float16")
        assert control_net.name == name and next(control_net.module.parameters()).dtype == torch.float16
        assert torch.equal(control_net.module.state_dict()["controlnet_mid_block.weight"],
                           tiny.state_dict()["controlnet_mid_block.weight"].half())


def test_errors_name_the_input_and_list_what_is_there(loader_ctx, controlnet_dir, tiny):
    original_file(tiny, controlnet_dir / "canny.safetensors")
    with pytest.raises(NodeInputError) as caught:
        run_node(LoadControlNet, loader_ctx, name="depth")
    assert caught.value.input == "name" and {"tiny-sd-controlnet", "canny.safetensors"} <= set(caught.value.expected)
    (controlnet_dir / "broken.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(NodeInputError) as caught:
        run_node(LoadControlNet, loader_ctx, name="broken")
    assert caught.value.input == "name" and "cannot be loaded" in str(caught.value)


def test_fingerprint_and_pool(controlnet_dir, tiny):
    spec = spec_of(LoadControlNet)
    assert spec.pool == "model" and spec.outputs == {"control_net": "CONTROL_NET"}
    settings = Settings(models_dir=controlnet_dir.parent)
    assert spec.fingerprint({"name": "tiny-sd-controlnet"}, settings) == "builtin:tiny-sd-controlnet:v1"
    path = original_file(tiny, controlnet_dir / "canny.safetensors")
    first = spec.fingerprint({"name": "canny"}, settings)
    original_file(tiny, path, "control_model.")
    assert spec.fingerprint({"name": "canny"}, settings) != first
    assert spec.preflight({"name": "nope"}, settings)
    assert not spec.preflight({"name": "tiny-sd-controlnet"}, settings)
