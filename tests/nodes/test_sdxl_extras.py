"""SDXL LoRAs (Kohya lora_te1_ / lora_te2_ / lora_unet_ keys, UNet in diffusers or original SDXL block names) and SDXL
textual-inversion files (``clip_l`` + ``clip_g``), on the tiny built-in SDXL base."""
import pytest
import torch
from safetensors.torch import save_file

from graphflow.errors import NodeInputError
from nodes.builtin_sdxl import build_tiny_sdxl_components, sdxl_pipeline
from nodes.checkpoints.unet import unet_to_original
from nodes.conditioning import prompt_conditioning, prompt_tokens
from nodes.embeddings import LoadEmbeddings
from nodes.lora import LoraLoader
from nodes.tiny_assets import make_kohya_lora
from tests.nodes.runctx import make_ctx, run_node
from tests.nodes.test_sdxl import values_of


@pytest.fixture(scope="module")
def parts():
    return build_tiny_sdxl_components()


def sdxl_kohya_lora(parts, original_unet_names=False):
    """A random Kohya SDXL LoRA: UNet attention, both text encoders (lora_te1_, lora_te2_)."""
    state = make_kohya_lora(parts["unet"], parts["text_encoder"], seed=1, attention_only=True)
    state = {k.replace("lora_te_", "lora_te1_"): v for k, v in state.items()}
    second = make_kohya_lora(None, parts["text_encoder_2"].text_model, seed=2, attention_only=True)
    state.update({k.replace("lora_te_", "lora_te2_"): v for k, v in second.items()})
    if original_unet_names:  # lora_unet_input_blocks_7_1_... as Kohya's SDXL trainer names the layers
        paths = {name.rsplit(".", 1)[0]: name for name in parts["unet"].state_dict()}
        original = unet_to_original({name: None for name in paths.values()}, dict(parts["unet"].config))
        renamed = dict(zip([k.rsplit(".", 1)[0] for k in original], paths))
        to_original = {diffusers.replace(".", "_"): ldm.replace(".", "_") for ldm, diffusers in renamed.items()}
        state = {_rename(k, to_original): v for k, v in state.items()}
        assert any(k.startswith("lora_unet_input_blocks_7_1_") for k in state)  # the lowest level attends
    return state


def _rename(key, to_original):
    head, _, rest = key.partition(".")
    if head.startswith("lora_unet_"):
        head = "lora_unet_" + to_original[head[len("lora_unet_"):]]
    return f"{head}.{rest}"


@pytest.mark.parametrize("original_unet_names", [False, True], ids=["diffusers-names", "sdxl-block-names"])
def test_kohya_sdxl_lora_patches_unet_and_both_encoders_as_diffusers_does(parts, tmp_path, original_unet_names):
    ctx, _ = make_ctx(tmp_path)
    folder = ctx.settings.models_dir / "loras"
    folder.mkdir(parents=True)
    state = sdxl_kohya_lora(parts, original_unet_names)
    save_file(state, str(folder / "xl.safetensors"))
    model, clip, _ = values_of(parts)
    new_model, new_clip = run_node(LoraLoader, ctx, model=model, clip=clip, name="xl", strength_model=1.0, strength_clip=1.0)
    pipe = sdxl_pipeline(build_tiny_sdxl_components())
    pipe.load_lora_weights(dict(state))
    pipe.fuse_lora(lora_scale=1.0)
    pipe.unload_lora_weights()
    for ours, theirs, original in [(new_model.unet, pipe.unet, parts["unet"]),
                                   (new_clip.text_encoder, pipe.text_encoder, parts["text_encoder"]),
                                   (new_clip.text_encoder_2, pipe.text_encoder_2, parts["text_encoder_2"])]:
        a, b, before = ours.state_dict(), theirs.state_dict(), original.state_dict()
        assert any(not torch.equal(a[k], before[k]) for k in a)  # the LoRA reached this part
        assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    assert torch.equal(clip.text_encoder_2.state_dict()["text_projection.weight"], parts["text_encoder_2"].state_dict()["text_projection.weight"])


def test_a_second_encoder_lora_on_a_single_encoder_clip_is_refused(parts, tmp_path, sd_model, sd_clip):
    ctx, _ = make_ctx(tmp_path)
    folder = ctx.settings.models_dir / "loras"
    folder.mkdir(parents=True)
    save_file({k: v for k, v in sdxl_kohya_lora(parts).items() if k.startswith("lora_te2_")}, str(folder / "te2.safetensors"))
    with pytest.raises(NodeInputError, match="second text encoder"):
        run_node(LoraLoader, ctx, model=sd_model, clip=sd_clip, name="te2")


def test_sdxl_embedding_puts_clip_l_and_clip_g_vectors_into_their_encoders(parts, tmp_path):
    ctx, _ = make_ctx(tmp_path)
    folder = ctx.settings.models_dir / "embeddings"
    folder.mkdir(parents=True)
    model, clip, _ = values_of(parts)
    generator = torch.Generator().manual_seed(0)
    clip_l, clip_g = torch.randn(2, 32, generator=generator), torch.randn(2, 64, generator=generator)
    save_file({"clip_l": clip_l, "clip_g": clip_g}, str(folder / "xlstyle.safetensors"))
    with_style = run_node(LoadEmbeddings, ctx, clip=clip, names="xlstyle")
    assert with_style.embeddings["xlstyle"].shape == (2, 96)
    tokens = prompt_tokens(with_style, "a cat, xlstyle")
    assert torch.equal(tokens.embedding_vectors, clip_l) and torch.equal(tokens.second.embedding_vectors, clip_g)
    # diffusers with the same vectors loaded into each encoder as textual inversion encodes the prompt alike
    ours = prompt_conditioning(with_style, tokens)
    pipe = sdxl_pipeline(build_tiny_sdxl_components())
    pipe.load_textual_inversion(clip_l, token="xlstyle", text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)
    pipe.load_textual_inversion(clip_g, token="xlstyle", text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2)
    embeds, _, pooled, _ = pipe.encode_prompt("a cat, xlstyle", do_classifier_free_guidance=False)
    assert (ours.embeds - embeds).abs().max() <= 1e-6 and (ours.pooled - pooled).abs().max() <= 1e-6
    assert not torch.equal(ours.embeds, prompt_conditioning(clip, prompt_tokens(clip, "a cat, xlstyle")).embeds)
    with pytest.raises(NodeInputError, match="width"):  # an SD 1.x-sized embedding does not fit SDXL
        save_file({"emb_params": torch.zeros(1, 32)}, str(folder / "narrow.safetensors"))
        run_node(LoadEmbeddings, ctx, clip=clip, names="narrow")
