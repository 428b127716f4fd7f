"""SDXL base and refiner single files (``conditioner.embedders.*``, ``model.diffusion_model.*``, ``first_stage_model.*``).

Numbers run on the tiny built-in SDXL models only; the real SDXL layouts are checked on the meta device (shapes
without memory). diffusers' own ``from_single_file`` converter is the independent witness of the key mapping."""
import pytest
import torch
from accelerate import init_empty_weights
from safetensors.torch import save_file

from nodes import checkpoints as ck
from nodes.checkpoints.families import family_named
from nodes.checkpoints.unet import unet_from_original
from nodes.builtin_sdxl import tiny_sdxl_folder
from nodes.values import Clip, Model, Vae


def values_of(parts: ck.Components):
    return (Model(parts.unet, parts.scheduler_config, parts.family, parts.prediction_type, "tiny"),
            Clip(parts.tokenizer, parts.text_encoder, parts.family, "tiny", text_encoder_2=parts.text_encoder_2,
                 tokenizer_2=parts.tokenizer_2),
            Vae(parts.vae, "tiny"))


def modules(parts: ck.Components) -> dict:
    found = {"unet": parts.unet, "vae": parts.vae, "text_encoder": parts.text_encoder}
    return found if parts.text_encoder_2 is None else {**found, "text_encoder_2": parts.text_encoder_2}


def assert_same_tensors(a: torch.nn.Module, b: torch.nn.Module, name: str):
    sa, sb = a.state_dict(), b.state_dict()
    assert sorted(sa) == sorted(sb), name
    assert all(torch.equal(sa[k], sb[k]) for k in sa), name


@pytest.fixture(scope="module", params=[False, True], ids=["base", "refiner"])
def tiny(request, tmp_path_factory):
    """(folder, its components, the single file graphflow writes from them)."""
    folder = tiny_sdxl_folder(refiner=request.param)
    parts = ck.load_diffusers_folder(folder)
    path = ck.save_single_file(*values_of(parts), tmp_path_factory.mktemp("sdxl") / "tiny.safetensors")
    return folder, parts, path


def test_single_file_and_folder_hold_the_same_weights_tensor_by_tensor(tiny):
    _, parts, path = tiny
    back = ck.load_single_file(path)
    assert (back.family, back.zero_empty_negative) == (parts.family, parts.zero_empty_negative)
    assert back.scheduler_config["_class_name"] == "EulerDiscreteScheduler"
    assert back.tokenizer.pad_token == parts.tokenizer.pad_token
    assert modules(back).keys() == modules(parts).keys()
    for name, module in modules(parts).items():
        assert_same_tensors(modules(back)[name], module, name)


def test_diffusers_from_single_file_reads_the_file_to_the_same_weights(tiny):
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    folder, parts, path = tiny
    refiner = parts.family == "sdxl-refiner"
    pipeline_class = StableDiffusionXLImg2ImgPipeline if refiner else StableDiffusionXLPipeline
    pipe = pipeline_class.from_single_file(str(path), config=str(folder), local_files_only=True)
    theirs = {"unet": pipe.unet, "vae": pipe.vae, "text_encoder": pipe.text_encoder_2 if refiner else pipe.text_encoder}
    if not refiner:
        theirs["text_encoder_2"] = pipe.text_encoder_2
    for name, module in modules(parts).items():
        assert_same_tensors(theirs[name], module, name)


def test_a_file_without_graphflow_metadata_takes_every_size_from_the_shapes(tiny, tmp_path):
    _, parts, path = tiny
    tensors, _ = ck.read_state_dict(path)
    bare = tmp_path / "bare.safetensors"
    save_file(tensors, str(bare))
    back = ck.load_single_file(bare)
    assert back.family == parts.family
    for name, module in modules(parts).items():
        assert_same_tensors(modules(back)[name], module, name)


@pytest.mark.parametrize("change, message", [
    (lambda t, p: t.pop(p + "text_projection"), "missing text_projection.weight"),
    (lambda t, p: t.update({p + "transformer.resblocks.0.attn.extra": torch.zeros(1)}), "unexpected"),
    (lambda t, p: t.update({p + "text_projection": t[p + "text_projection"][:-1].contiguous()}), "text_projection"),
    (lambda t, p: t.update({p + "text_projection": t[p + "text_projection"][:, :-1].contiguous()}), "31-wide pooled text embedding plus"),
    (lambda t, p: t.pop("model.diffusion_model.label_emb.0.2.bias"), "missing add_embedding.linear_2.bias"),
], ids=["projection-missing", "unknown-key", "projection-misshapen", "pooled-too-narrow", "label-emb-missing"])
def test_a_wrong_or_incomplete_mapping_is_an_error(tiny, tmp_path, change, message):
    _, parts, path = tiny
    tensors, metadata = ck.read_state_dict(path)
    change(tensors, family_named(parts.family).encoders[-1][0])
    broken = tmp_path / "broken.safetensors"
    save_file(tensors, str(broken), metadata=metadata)
    with pytest.raises(ck.CheckpointError, match=message):
        ck.load_single_file(broken)


def test_a_9_channel_refiner_is_named_in_the_error(tiny, tmp_path):
    _, parts, path = tiny
    tensors, _ = ck.read_state_dict(path)
    first = tensors["model.diffusion_model.input_blocks.0.0.weight"]
    tensors["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(first.shape[0], 9, *first.shape[2:])
    if parts.family == "sdxl":
        assert ck.detect(tensors) == ck.Detected("sdxl", True, 96, "clip")
        assert ck.config_folder("sdxl", True, "epsilon").name == "sdxl-inpainting"
    else:
        with pytest.raises(ck.CheckpointError, match="9-channel SDXL refiner UNet"):
            ck.detect(tensors)


# ------------------------------------------------------------------- real SDXL layouts, on the meta device

REAL = {  # config folder → (Detected, a few tensors of the published sd_xl_base_1.0 / refiner files with their shapes)
    "sdxl": (ck.Detected("sdxl", False, 2048, "clip"), {
        "conditioner.embedders.0.transformer.text_model.encoder.layers.11.mlp.fc1.weight": (3072, 768),
        "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight": (768,),
        "conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_weight": (3840, 1280),
        "conditioner.embedders.1.model.transformer.resblocks.31.mlp.c_fc.weight": (5120, 1280),
        "conditioner.embedders.1.model.text_projection": (1280, 1280),
        "conditioner.embedders.1.model.positional_embedding": (77, 1280),
        "conditioner.embedders.1.model.ln_final.weight": (1280,),
        "model.diffusion_model.label_emb.0.0.weight": (1280, 2816),
        "model.diffusion_model.label_emb.0.2.weight": (1280, 1280),
        "model.diffusion_model.input_blocks.4.1.proj_in.weight": (640, 640),
        "model.diffusion_model.input_blocks.8.1.transformer_blocks.9.attn2.to_k.weight": (1280, 2048),
        "model.diffusion_model.middle_block.1.transformer_blocks.9.ff.net.2.weight": (1280, 5120),
        "model.diffusion_model.output_blocks.2.2.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.5.2.conv.weight": (640, 640, 3, 3),
        "model.diffusion_model.output_blocks.8.0.skip_connection.weight": (320, 640, 1, 1),
        "first_stage_model.decoder.up.3.upsample.conv.weight": (512, 512, 3, 3),
    }),
    "sdxl-refiner": (ck.Detected("sdxl-refiner", False, 1280, "openclip-g"), {
        "conditioner.embedders.0.model.transformer.resblocks.31.attn.in_proj_bias": (3840,),
        "conditioner.embedders.0.model.text_projection": (1280, 1280),
        "model.diffusion_model.label_emb.0.0.weight": (1536, 2560),
        "model.diffusion_model.input_blocks.4.1.transformer_blocks.3.attn2.to_k.weight": (768, 1280),
        "model.diffusion_model.middle_block.1.transformer_blocks.3.attn1.to_q.weight": (1536, 1536),
        "model.diffusion_model.output_blocks.11.0.skip_connection.weight": (384, 768, 1, 1),
    }),
}


@pytest.fixture(scope="module", params=list(REAL))
def full_size(request):
    """A full-size SDXL model from a shipped config folder, built without memory, and its original-layout state dict."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    folder = ck.CONFIGS / request.param
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(ck.read_json(folder / "unet" / "config.json"))
        vae = AutoencoderKL.from_config(ck.read_json(folder / "vae" / "config.json"))
        big_g = CLIPTextModelWithProjection(CLIPTextConfig.from_dict(ck.read_json(folder / "text_encoder_2" / "config.json")))
        clip_l = None
        if (folder / "text_encoder").is_dir():
            clip_l = CLIPTextModel(CLIPTextConfig.from_dict(ck.read_json(folder / "text_encoder" / "config.json")))
    family = REAL[request.param][0].family
    clip = Clip(None, clip_l, family, family, text_encoder_2=big_g) if clip_l else Clip(None, big_g, family, family)
    state_dict = ck.original_state_dict(Model(unet, {}, family, "epsilon", family), clip, Vae(vae, family))
    return request.param, folder, unet, [m for m in (clip_l, big_g) if m is not None], state_dict


def test_real_sdxl_layouts_are_detected_with_their_published_keys(full_size):
    name, _, _, _, state_dict = full_size
    detected, known = REAL[name]
    assert ck.detect(state_dict) == detected
    assert {key: tuple(state_dict[key].shape) for key in known} == known
    assert all(t.device.type == "meta" for t in state_dict.values())


def test_sizes_read_from_real_sdxl_layouts_match_the_shipped_configs(full_size):
    name, folder, _, encoders, state_dict = full_size
    family = family_named(REAL[name][0].family)
    parts = ck.split_components(state_dict)
    derived = [("unet", ck.derive_unet_config(parts["unet"])), ("vae", ck.derive_vae_config(parts["vae"]))]
    for (_, layout), weights, subfolder in zip(family.encoders, ck.text_parts(state_dict, family), ck.text_subfolders(family)):
        derived.append((subfolder, ck.derive_text_config(layout.from_original(weights))))
    for component, sizes in derived:
        shipped = ck.read_json(folder / component / "config.json")
        assert sizes == {k: shipped[k] for k in sizes}, component
        assert ck.size_defaults(component, shipped, sizes) == {}, component


def test_every_real_sdxl_tensor_maps_onto_the_diffusers_modules(full_size):
    name, _, unet, encoders, state_dict = full_size
    family = family_named(REAL[name][0].family)
    parts = ck.split_components(state_dict)
    config = ck.derive_unet_config(parts["unet"])
    assert set(unet_from_original(parts["unet"], {**dict(unet.config), **config})) == set(unet.state_dict())
    for (_, layout), weights, encoder in zip(family.encoders, ck.text_parts(state_dict, family), encoders):
        assert set(layout.from_original(weights)) == set(encoder.state_dict()), layout.name


def test_a_float16_file_is_cast_while_it_is_read(tiny, tmp_path):
    """Streaming: every weight arrives in the asked dtype straight from the file (no float16 copy is kept), with
    exactly the values a load-then-cast gives."""
    _, parts, path = tiny
    tensors, metadata = ck.read_state_dict(path)
    half = tmp_path / "half.safetensors"
    save_file({k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}, str(half), metadata=metadata)
    streamed, _ = ck.read_state_dict(half, torch.float32)
    assert {t.dtype for t in streamed.values()} == {torch.float32}
    as_half, _ = ck.read_state_dict(half)
    assert all(torch.equal(streamed[k], as_half[k].float()) for k in as_half)
    loaded = ck.load_single_file(half, dtype=torch.float32)
    assert all(torch.equal(t, parts.unet.state_dict()[k].half().float()) for k, t in loaded.unet.state_dict().items())
