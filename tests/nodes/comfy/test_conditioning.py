"""comfy.CLIPTextEncode, comfy.CLIPSetLastLayer and ComfyUI's conditioning nodes over graphflow's values."""
import pytest
import torch
from safetensors.torch import save_file

from graphflow.errors import NodeInputError
from nodes.comfy.conditioning import (CLIPSetLastLayer, CLIPTextEncode, ConditioningCombine, ConditioningSetArea,
                                      ConditioningZeroOut, prompt_fingerprint, clip_skip_of)
from nodes.conditioning import prompt_conditioning, prompt_tokens
from nodes.values import Conditioning


def plain(value):
    return Conditioning(embeds=torch.full((1, 77, 4), float(value)), empty_chunk=torch.ones(1, 77, 4))


def test_combine_keeps_every_entry_in_order():
    combined = ConditioningCombine(ConditioningCombine(plain(1), plain(2)), plain(3))
    assert [float(e.embeds[0, 0, 0]) for e in combined.entries] == [1.0, 2.0, 3.0]
    assert not combined.is_plain and plain(1).is_plain


def test_set_area_stores_latent_pixels_in_comfyuis_order_on_every_entry():
    area = ConditioningSetArea(ConditioningCombine(plain(1), plain(2)), width=256, height=192, x=64, y=100, strength=0.7)
    assert [(e.area, e.strength) for e in area.entries] == [((24, 32, 12, 8), 0.7)] * 2


def test_zero_out_zeroes_embeddings_and_keeps_areas():
    zeroed = ConditioningZeroOut(ConditioningSetArea(plain(5), 64, 64, 0, 0, 1.0))
    assert torch.all(zeroed.embeds == 0) and torch.all(zeroed.empty_chunk == 0) and zeroed.area == (8, 8, 0, 0)


def test_text_encode_is_graphflows_encoder_for_an_unweighted_prompt(sd_clip, stage_ctx):
    ctx, _ = stage_ctx
    comfy = CLIPTextEncode("a photo of a cat", sd_clip, ctx=ctx)
    assert torch.equal(comfy.embeds, prompt_conditioning(sd_clip, prompt_tokens(sd_clip, "a photo of a cat")).embeds)
    weighted = CLIPTextEncode("a photo of a (cat:1.4)", sd_clip, ctx=ctx)
    assert not torch.allclose(weighted.embeds, comfy.embeds) and weighted.empty_chunk.shape == (1, 77, 32)


def test_set_last_layer_is_clip_skip(sd_clip, stage_ctx):
    ctx, _ = stage_ctx
    skipped = CLIPSetLastLayer(sd_clip, -2)
    assert clip_skip_of(skipped) == 2 and clip_skip_of(CLIPSetLastLayer(sd_clip, -24)) == 1
    expected = prompt_conditioning(sd_clip, prompt_tokens(sd_clip, "a cat"), clip_skip=2).embeds
    assert torch.equal(CLIPTextEncode("a cat", skipped, ctx=ctx).embeds, expected)
    assert sd_clip.stop_at_layer is None  # the input CLIP is left alone
    assert clip_skip_of(CLIPSetLastLayer(sd_clip, -1)) == 1 and clip_skip_of(sd_clip) == 1
    from dataclasses import replace

    assert clip_skip_of(replace(sd_clip, family="sd2")) == 2  # ComfyUI encodes SD 2.x at the penultimate layer


def test_composed_conditioning_survives_the_disk_cache():
    from nodes.values import value_from_disk, value_to_disk

    composed = ConditioningCombine(plain(1), ConditioningSetArea(plain(2), 128, 64, 0, 64, 0.5))
    back = value_from_disk(*value_to_disk(composed))
    assert [(e.area, e.strength, float(e.embeds[0, 0, 0])) for e in back.entries] == \
        [(None, 1.0, 1.0), ((8, 16, 8, 0), 0.5, 2.0)]


def test_embeddings_come_from_the_clip_or_the_embeddings_folder(sd_clip, stage_ctx):
    ctx, _ = stage_ctx
    folder = ctx.settings.models_dir / "embeddings"
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"emb_params": torch.randn(3, 32)}, str(folder / "mystyle.safetensors"))
    before = prompt_fingerprint({"text": "a embedding:mystyle cat"}, ctx.settings)
    with_file = CLIPTextEncode("a embedding:mystyle cat", sd_clip, ctx=ctx)
    assert with_file.embeds.shape == (1, 77, 32)
    save_file({"emb_params": torch.randn(3, 32)}, str(folder / "mystyle.safetensors"))
    assert prompt_fingerprint({"text": "a embedding:mystyle cat"}, ctx.settings) != before
    with pytest.raises(NodeInputError) as error:
        CLIPTextEncode("a embedding:unknownstyle cat", sd_clip, ctx=ctx)
    assert error.value.input == "text" and "unknownstyle" in str(error.value)


def test_graphflows_sample_refuses_composed_conditioning(sd_model):
    from nodes.unet_inputs import unet_inputs

    combined = ConditioningCombine(plain(1), plain(2))
    with pytest.raises(NodeInputError) as error:
        unet_inputs(sd_model, combined, plain(0), 7.0, 1, (8, 8))
    assert error.value.input == "positive" and "comfy.KSampler" in str(error.value.expected)


def test_the_servers_prompt_window_limit_applies(sd_clip, stage_ctx):
    from dataclasses import replace

    ctx, _ = stage_ctx
    ctx.settings = replace(ctx.settings, limits={"prompt_chunks": 1})
    CLIPTextEncode("cat " * 70, sd_clip, ctx=ctx)  # one window
    with pytest.raises(NodeInputError) as error:
        CLIPTextEncode("cat " * 100, sd_clip, ctx=ctx)
    assert error.value.input == "text" and "prompt_chunks" in str(error.value)
