"""nodes.checkpoints: original-layout single files in and out, family detection, strict loading.

Full-size SD models are only ever built on the meta device (shapes without memory); everything that runs
numbers uses the built-in tiny model."""
import json

import pytest
import torch
from accelerate import init_empty_weights
from safetensors.torch import load_file, save_file

from nodes import checkpoints as ck
from nodes.values import Clip, Model, Vae


# ------------------------------------------------------------------------------------------------ helpers

def as_values(parts: ck.Components, family: str | None = None):
    family = family or parts.family
    return (Model(parts.unet, parts.scheduler_config, family, parts.prediction_type, "tiny"),
            Clip(parts.tokenizer, parts.text_encoder, family, "tiny"),
            Vae(parts.vae, "tiny"))


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].dtype == sb[key].dtype, key
        assert torch.equal(sa[key], sb[key]), key


@torch.no_grad()
def unet_output(unet) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(1, unet.config.in_channels, 16, 16, generator=g)
    context = torch.randn(1, 77, unet.config.cross_attention_dim, generator=g)
    return unet(sample, torch.tensor([500]), encoder_hidden_states=context).sample


@torch.no_grad()
def text_output(text_encoder) -> torch.Tensor:
    ids = torch.tensor([[49406, 320, 1929, 539, 49407] + [49407] * 72])
    return text_encoder(ids).last_hidden_state


def save(parts, path, family=None):
    return ck.save_single_file(*as_values(parts, family), path)


def rewrite(path, change):
    """Rewrite a single file after ``change(tensors)`` edits its tensors (metadata kept)."""
    tensors, metadata = ck.read_state_dict(path)
    change(tensors)
    save_file(tensors, str(path), metadata=metadata)
    return path


@pytest.fixture(scope="module")
def tiny_file(tiny_components, tmp_path_factory):
    return save(tiny_components, tmp_path_factory.mktemp("single") / "tiny.safetensors")


@pytest.fixture
def tiny_copy(tiny_file, tmp_path):
    path = tmp_path / "copy.safetensors"
    path.write_bytes(tiny_file.read_bytes())
    return path


# ------------------------------------------------------------------- real SD layouts, on the meta device

FULL_SIZE = {  # config folder → (family, inpainting, width, text layout, diffusers' own name for the type)
    "sd1": ("sd1", False, 768, "clip", "v1"),
    "sd1-inpainting": ("sd1", True, 768, "clip", "inpainting"),
    "sd2": ("sd2", False, 1024, "openclip", "v2"),
    "sd2-inpainting": ("sd2", True, 1024, "openclip", "inpainting_v2"),
}


@pytest.fixture(scope="module", params=list(FULL_SIZE))
def full_size(request):
    """A full-size model from a shipped config, built without memory, and its original-layout state dict."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = ck.CONFIGS / request.param
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(ck.read_json(folder / "unet" / "config.json"))
        vae = AutoencoderKL.from_config(ck.read_json(folder / "vae" / "config.json"))
        text = CLIPTextModel(CLIPTextConfig.from_dict(ck.read_json(folder / "text_encoder" / "config.json")))
    family = FULL_SIZE[request.param][0]
    model, clip = Model(unet, {}, family, "epsilon", request.param), Clip(None, text, family, request.param)
    return request.param, folder, unet, vae, text, ck.original_state_dict(model, clip, Vae(vae, request.param))


def test_real_layouts_are_detected(full_size):
    name, _, _, _, _, state_dict = full_size
    family, inpainting, width, text_layout, _ = FULL_SIZE[name]
    assert ck.detect(state_dict) == ck.Detected(family, inpainting, width, text_layout)


def test_sizes_read_from_real_layouts_match_the_shipped_configs(full_size):
    name, folder, _, _, _, state_dict = full_size
    parts = ck.split_components(state_dict)
    for component, derived in [
        ("unet", ck.derive_unet_config(parts["unet"])),
        ("vae", ck.derive_vae_config(parts["vae"])),
        ("text_encoder", ck.derive_text_config(ck.openclip_from_original(parts["openclip"]) if name.startswith("sd2")
                                               else ck.clip_from_original(parts["clip"]))),
    ]:
        shipped = ck.read_json(folder / component / "config.json")
        assert derived == {k: shipped[k] for k in derived}, component
        assert ck.size_defaults(component, shipped, derived) == {}, component


REAL_KEYS = {  # a few well-known tensors of the published SD 1.5 / 2.1 files, with their shapes
    "sd1": {
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768),
        "model.diffusion_model.input_blocks.3.0.op.weight": (320, 320, 3, 3),
        "model.diffusion_model.middle_block.1.proj_in.weight": (1280, 1280, 1, 1),
        "model.diffusion_model.output_blocks.2.1.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.5.2.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.11.0.skip_connection.weight": (320, 640, 1, 1),
        "model.diffusion_model.time_embed.0.weight": (1280, 320),
        "model.diffusion_model.out.2.weight": (4, 320, 3, 3),
        "first_stage_model.encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
        "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight": (128, 256, 1, 1),
        "first_stage_model.decoder.up.3.upsample.conv.weight": (512, 512, 3, 3),
        "first_stage_model.quant_conv.weight": (8, 8, 1, 1),
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (49408, 768),
        "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc1.weight": (3072, 768),
        "cond_stage_model.transformer.text_model.final_layer_norm.weight": (768,),
    },
    "sd2": {
        "model.diffusion_model.input_blocks.1.1.proj_in.weight": (320, 320),
        "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight": (320, 1024),
        "model.diffusion_model.output_blocks.8.2.conv.weight": (640, 640, 3, 3),
        "cond_stage_model.model.positional_embedding": (77, 1024),
        "cond_stage_model.model.token_embedding.weight": (49408, 1024),
        "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight": (3072, 1024),
        "cond_stage_model.model.transformer.resblocks.22.mlp.c_fc.weight": (4096, 1024),
        "cond_stage_model.model.transformer.resblocks.23.ln_2.bias": (1024,),
        "cond_stage_model.model.ln_final.weight": (1024,),
    },
}


def test_written_layout_has_the_published_key_names_and_shapes(full_size):
    name, _, _, _, _, state_dict = full_size
    for key, expected in REAL_KEYS[name.split("-")[0]].items():
        assert key in state_dict, key
        assert tuple(state_dict[key].shape) == expected, key
    if name == "sd1-inpainting":
        assert tuple(state_dict["model.diffusion_model.input_blocks.0.0.weight"].shape) == (320, 9, 3, 3)


def test_diffusers_own_converters_read_our_layout_back(full_size):
    """An independent implementation (diffusers.loaders.single_file_utils) agrees with our key tables."""
    from diffusers.loaders import single_file_utils as sfu

    name, _, unet, vae, text, state_dict = full_size
    assert sfu.infer_diffusers_model_type(state_dict) == FULL_SIZE[name][4]

    def same_layout(converted, module):
        expected = module.state_dict()
        assert sorted(converted) == sorted(expected)
        assert all(tuple(converted[k].shape) == tuple(expected[k].shape) for k in expected)

    same_layout(sfu.convert_ldm_unet_checkpoint(state_dict, dict(unet.config)), unet)
    same_layout(sfu.convert_ldm_vae_checkpoint(state_dict, dict(vae.config)), vae)
    if name.startswith("sd2"):
        converted = sfu.convert_open_clip_checkpoint(text, state_dict)
    else:
        converted = sfu.convert_ldm_clip_checkpoint(state_dict)
    same_layout({k.removeprefix("text_model."): v for k, v in converted.items()}, text)


# --------------------------------------------------------------------------------- tiny single files

def test_single_file_round_trip_is_exact(tiny_components, tiny_file):
    loaded = ck.load_single_file(tiny_file)
    for part in ("unet", "vae", "text_encoder"):
        assert_same_weights(getattr(tiny_components, part), getattr(loaded, part))
    assert torch.equal(unet_output(loaded.unet), unet_output(tiny_components.unet))
    assert torch.equal(text_output(loaded.text_encoder), text_output(tiny_components.text_encoder))
    assert (loaded.family, loaded.prediction_type) == ("sd1", "epsilon")
    assert loaded.scheduler_config["prediction_type"] == "epsilon"
    assert loaded.tokenizer.pad_token == "<|endoftext|>"
    assert loaded.text_encoder.config.num_attention_heads == tiny_components.text_encoder.config.num_attention_heads


def test_file_without_graphflow_metadata_loads_from_shapes_alone(tiny_components, tiny_file, tmp_path):
    """A third-party file has no configs in its metadata: every size comes from the tensor shapes."""
    bare = tmp_path / "bare.safetensors"
    save_file(load_file(str(tiny_file)), str(bare))
    loaded = ck.load_single_file(bare)
    for part in ("unet", "vae", "text_encoder"):
        assert_same_weights(getattr(tiny_components, part), getattr(loaded, part))
    # 8 UNet heads is the SD1 rule and what the tiny model uses, so the UNet computes the same function.
    assert torch.equal(unet_output(loaded.unet), unet_output(tiny_components.unet))
    assert loaded.unet.config.block_out_channels == (32, 64) or list(loaded.unet.config.block_out_channels) == [32, 64]
    # Text heads are invisible in the weights; without metadata the 64-wide-head rule gives one head here.
    assert loaded.text_encoder.config.num_attention_heads == 1


def tiny_sd2(tiny_components):
    """The tiny model with an OpenCLIP-style text encoder (exact GELU), labelled sd2."""
    from transformers import CLIPTextConfig, CLIPTextModel

    config = tiny_components.text_encoder.config.to_dict() | {"hidden_act": "gelu"}
    torch.manual_seed(5)
    text = CLIPTextModel(CLIPTextConfig.from_dict(config)).eval()
    return ck.Components(tiny_components.unet, tiny_components.vae, text, tiny_components.tokenizer,
                         tiny_components.scheduler_config, "sd2", "epsilon")


def test_sd2_openclip_layout_round_trip(tiny_components, tmp_path):
    original = tiny_sd2(tiny_components)
    path = save(original, tmp_path / "tiny-sd2.safetensors")
    tensors, _ = ck.read_state_dict(path)
    assert "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight" in tensors
    assert not any(k.startswith("cond_stage_model.transformer.") for k in tensors)
    loaded = ck.load_single_file(path)
    assert loaded.family == "sd2" and loaded.tokenizer.pad_token == "!"
    assert_same_weights(original.text_encoder, loaded.text_encoder)
    assert torch.equal(text_output(loaded.text_encoder), text_output(original.text_encoder))


def test_sd2_export_pads_the_tower_with_an_identity_block(tiny_components, tmp_path):
    """Tools that run the whole OpenCLIP tower and take the penultimate layer must get our conditioning:
    the written final block is all zeros, so running it too changes nothing."""
    from transformers import CLIPTextConfig, CLIPTextModel

    original = tiny_sd2(tiny_components)
    tensors, _ = ck.read_state_dict(save(original, tmp_path / "tiny-sd2.safetensors"))
    tower = ck.take_prefix(tensors, ck.OPENCLIP_PREFIX)
    layers = ck.indices(tower, "transformer.resblocks.")
    assert len(layers) == original.text_encoder.config.num_hidden_layers + 1
    # Append a throwaway block for the reader to drop, so that the padding block itself gets loaded.
    extra = f"transformer.resblocks.{layers[-1] + 1}."
    tower |= {extra + k.split(".", 3)[3]: v for k, v in tower.items() if k.startswith("transformer.resblocks.0.")}
    config = original.text_encoder.config.to_dict() | {"num_hidden_layers": len(layers)}
    full = CLIPTextModel(CLIPTextConfig.from_dict(config)).eval()
    full.load_state_dict(ck.openclip_from_original(tower), strict=True)
    assert torch.allclose(text_output(full), text_output(original.text_encoder), atol=1e-6)


def test_inpainting_file_is_detected(tmp_path):
    from nodes.builtin_models import tiny_sd_folder

    parts = ck.load_diffusers_folder(tiny_sd_folder(in_channels=9))
    assert parts.unet.config.in_channels == 9
    loaded = ck.load_single_file(save(parts, tmp_path / "inpaint.safetensors"))
    assert loaded.unet.config.in_channels == 9
    assert ck.detect(ck.read_state_dict(tmp_path / "inpaint.safetensors")[0]).inpainting
    assert torch.equal(unet_output(loaded.unet), unet_output(parts.unet))


def test_loading_assigns_the_file_tensors_without_copying(tiny_components):
    from diffusers import AutoencoderKL

    weights = {k: v.clone() for k, v in tiny_components.vae.state_dict().items()}
    with init_empty_weights():
        vae = AutoencoderKL.from_config(dict(tiny_components.vae.config))
    ck.load_exact(vae, weights, "VAE")
    assert all(p.data_ptr() == weights[k].data_ptr() for k, p in vae.state_dict().items())


def test_dtype_is_applied(tiny_file):
    loaded = ck.load_single_file(tiny_file, dtype=torch.float16)
    assert {p.dtype for m in (loaded.unet, loaded.vae, loaded.text_encoder) for p in m.parameters()} == {torch.float16}


# -------------------------------------------------------------------------- strictness and bad files

def test_missing_text_encoder_weight_fails_loudly(tiny_copy):
    key = "cond_stage_model.transformer.text_model.final_layer_norm.weight"
    rewrite(tiny_copy, lambda t: t.pop(key))
    with pytest.raises(ck.CheckpointError, match="text encoder.*missing final_layer_norm.weight"):
        ck.load_single_file(tiny_copy)


def test_misnamed_text_encoder_weights_fail_loudly(tiny_copy):
    """The classic silent failure: keys that do not line up with the model. Here they must raise."""
    def misname(tensors):
        for key in [k for k in tensors if ".encoder.layers.2." in k]:
            tensors[key.replace(".encoder.layers.2.", ".encoder.layer.2.")] = tensors.pop(key)
    rewrite(tiny_copy, misname)
    with pytest.raises(ck.CheckpointError, match="text encoder.*missing encoder.layers.2.*unexpected encoder.layer.2"):
        ck.load_single_file(tiny_copy)


def test_unexpected_unet_weight_fails_loudly(tiny_copy):
    rewrite(tiny_copy, lambda t: t.update({"model.diffusion_model.time_embed.1.weight": torch.zeros(2, 2)}))
    with pytest.raises(ck.CheckpointError, match="UNet.*unexpected time_embed.1.weight"):
        ck.load_single_file(tiny_copy)


def test_misshapen_vae_weight_fails_loudly(tiny_copy):
    rewrite(tiny_copy, lambda t: t.update({"first_stage_model.quant_conv.bias": torch.zeros(3)}))
    with pytest.raises(ck.CheckpointError, match="VAE.*quant_conv.bias"):
        ck.load_single_file(tiny_copy)


def test_training_leftovers_are_not_part_of_the_model(tiny_components, tiny_copy):
    rewrite(tiny_copy, lambda t: t.update({
        "alphas_cumprod": torch.ones(1000), "model_ema.decay": torch.tensor(0.999),
        "model_ema.diffusion_modelinput_blocks00weight": torch.zeros(1),
        "cond_stage_model.transformer.text_model.embeddings.position_ids": torch.arange(77)[None],
    }))
    assert_same_weights(tiny_components.text_encoder, ck.load_single_file(tiny_copy).text_encoder)


class Unsafe:
    """Any class outside torch's allow-list makes a pickle need unrestricted unpickling."""


def test_ckpt_files_load_with_weights_only(tiny_components, tiny_file, tmp_path):
    path = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": load_file(str(tiny_file)), "global_step": 1000}, path)
    assert_same_weights(tiny_components.unet, ck.load_single_file(path).unet)


def test_ckpt_that_needs_pickle_is_refused(tiny_file, tmp_path):
    path = tmp_path / "unsafe.ckpt"
    torch.save({"state_dict": load_file(str(tiny_file)), "callback": Unsafe()}, path)
    with pytest.raises(ck.CheckpointError, match=r"pickled Python objects besides tensors \(.*Unsafe\).*weights_only=True"):
        ck.load_single_file(path)


@pytest.mark.parametrize("content, message", [
    (b"hello, not a model", "neither a safetensors file nor a PyTorch checkpoint"),
    (b"\x80\x02}q\x00.", "neither a safetensors file nor a PyTorch checkpoint"),
    ({"weight": torch.zeros(3)}, "no UNet weights"),
    ({"down_blocks.0.resnets.0.conv1.weight": torch.zeros(1)}, "diffusers layout"),
])
def test_files_that_are_not_sd_checkpoints(tmp_path, content, message):
    path = tmp_path / "model.safetensors"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        save_file(content, str(path))
    with pytest.raises(ck.CheckpointError, match=message):
        ck.load_single_file(path)


def test_parts_of_different_widths_are_refused(tiny_components, tmp_path):
    from transformers import CLIPTextConfig, CLIPTextModel

    wide = CLIPTextModel(CLIPTextConfig.from_dict(tiny_components.text_encoder.config.to_dict() | {"hidden_size": 48}))
    mixed = ck.Components(tiny_components.unet, tiny_components.vae, wide, tiny_components.tokenizer,
                          tiny_components.scheduler_config, "sd1", "epsilon")
    with pytest.raises(ck.CheckpointError, match="32-wide text features but the text encoder produces 48-wide"):
        ck.load_single_file(save(mixed, tmp_path / "mixed.safetensors"))


def test_unet_only_file_is_not_a_full_checkpoint(tiny_copy):
    rewrite(tiny_copy, lambda t: [t.pop(k) for k in list(t) if not k.startswith(ck.UNET_PREFIX)])
    with pytest.raises(ck.CheckpointError, match="no text encoder"):
        ck.load_single_file(tiny_copy)


# ------------------------------------------------------------------------------------- prediction type

@pytest.mark.parametrize("file_name, family, sidecar, metadata, expected", [
    ("v2-1_768-ema-pruned.safetensors", "sd2", None, {}, "v_prediction"),
    ("768-v-ema.ckpt", "sd2", None, {}, "v_prediction"),
    ("my-sd2-vpred.safetensors", "sd2", None, {}, "v_prediction"),
    ("v2-1_512-ema-pruned.safetensors", "sd2", None, {}, "epsilon"),
    ("sd15-finetune-768.safetensors", "sd1", None, {}, "epsilon"),
    ("anything.safetensors", "sd2", 'model:\n  params:\n    parameterization: "v"\n', {}, "v_prediction"),
    ("v2-1_768.safetensors", "sd2", "model:\n  params:\n    linear_start: 0.00085\n", {}, "epsilon"),
    ("tiny.safetensors", "sd2", None, {"graphflow.scheduler_config": json.dumps({"prediction_type": "v_prediction"})}, "v_prediction"),
])
def test_prediction_type_rules(tmp_path, file_name, family, sidecar, metadata, expected):
    path = tmp_path / file_name
    if sidecar:
        path.with_suffix(".yaml").write_text(sidecar)
    assert ck.guess_prediction_type(path, family, metadata) == expected


def test_prediction_type_chooses_the_sd2_config(tiny_components, tmp_path):
    path = save(tiny_sd2(tiny_components), tmp_path / "tiny.safetensors")
    rewrite(path, lambda t: None)
    assert ck.load_single_file(path, prediction_type="v_prediction").scheduler_config["prediction_type"] == "v_prediction"
    assert ck.config_folder("sd2", False, "v_prediction").name == "sd2"
    assert ck.config_folder("sd2", False, "epsilon").name == "sd2-base"
    assert ck.config_folder("sd1", True, "epsilon").name == "sd1-inpainting"


# ----------------------------------------------------------------------------------------- VAE files

def test_bare_vae_file_loads(tiny_components, tmp_path):
    """Standalone VAE releases store the VAE without the first_stage_model. prefix (plus loss weights)."""
    vae = tiny_components.vae
    tensors = {k: v.contiguous() for k, v in ck.vae_to_original(vae.state_dict(), dict(vae.config)).items()}
    tensors["loss.logvar"] = torch.zeros(())
    save_file(tensors, str(tmp_path / "vae.safetensors"))
    assert_same_weights(vae, ck.load_vae_file(tmp_path / "vae.safetensors"))


def test_vae_from_a_whole_checkpoint(tiny_components, tiny_file):
    assert_same_weights(tiny_components.vae, ck.load_vae_file(tiny_file))


# ---------------------------------------------------------------------------------- diffusers folders

def test_diffusers_folder_loading_is_strict(tmp_path):
    import shutil

    from nodes.builtin_models import tiny_sd_folder

    folder = tmp_path / "broken"
    shutil.copytree(tiny_sd_folder(), folder)
    weights = folder / "text_encoder" / "model.safetensors"
    tensors = load_file(str(weights))
    tensors.pop("final_layer_norm.weight")
    save_file(tensors, str(weights), metadata={"format": "pt"})
    with pytest.raises(ck.CheckpointError, match="text encoder.*final_layer_norm.weight"):
        ck.load_diffusers_folder(folder)


def test_a_family_is_a_record_that_detection_and_configs_read(monkeypatch):
    """Detection, config choice and messages come from the family records only: a new record is a new family."""
    import dataclasses

    from nodes.checkpoints import families

    wide = dataclasses.replace(families.SD1, name="sd1-wide", title="SD 1.x wide", cross_attention_dim=48,
                               configs={"epsilon": "sd2-base"}, inpainting_config="sd2-inpainting")
    monkeypatch.setattr(families, "FAMILIES", families.FAMILIES + (wide,))
    unet = {"model.diffusion_model.input_blocks.0.0.weight": torch.empty(8, 9, 3, 3, device="meta"),
            "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": torch.empty(8, 48, device="meta")}
    assert families.detect(unet) == ck.Detected("sd1-wide", True, 48, None)
    assert families.config_folder("sd1-wide", False, "v_prediction").name == "sd2-base"
    assert families.config_folder("sd1-wide", True, "epsilon").name == "sd2-inpainting"
    assert "SD 1.x wide" in families.loadable_titles()
