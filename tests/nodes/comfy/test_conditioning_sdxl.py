"""comfy.CLIPTextEncode with SDXL CLIPs, as ComfyUI's SDXL CLIP encodes: both encoders read the one text, each
weighs its tokens against its own empty prompt, the layer is read without the final norm (default the
penultimate; CLIPSetLastLayer -n the n-th from the end, each encoder counting its own depth, past it the last
layer through the norm), clip_l's features come first and the pooled embedding is the last encoder's, of the
first window. Expectations are computed with transformers' own forward pass where they can be."""
from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file

from graphflow.errors import NodeInputError
from nodes.builtin_sdxl import build_tiny_sdxl_components
from nodes.comfy.conditioning import CLIPSetLastLayer, CLIPTextEncode, ConditioningZeroOut
from nodes.comfy.sdxl import CLIPTextEncodeSDXL
from nodes.conditioning import prompt_conditioning, prompt_tokens
from nodes.values import Clip


@pytest.fixture(scope="module")
def base_clip():
    parts = build_tiny_sdxl_components()
    return Clip(parts["tokenizer"], parts["text_encoder"], "sdxl", "sdxl", text_encoder_2=parts["text_encoder_2"],
                tokenizer_2=parts["tokenizer_2"])


@pytest.fixture(scope="module")
def refiner_clip():
    parts = build_tiny_sdxl_components(refiner=True)
    return Clip(parts["tokenizer_2"], parts["text_encoder_2"], "sdxl-refiner", "sdxl-refiner")


def states(tokenizer, text_encoder, text):
    """transformers' hidden states (embeddings, then each layer's raw output), final-normed output and the
    projected pooled embedding for one 77-token window, padded with the tokenizer's own pad token."""
    ids = tokenizer(text, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        out = text_encoder(ids, output_hidden_states=True)
    pooled = getattr(out, "text_embeds", None)
    return out.hidden_states, out.last_hidden_state, pooled


def test_an_unweighted_prompt_is_graphflows_sdxl_encoding(base_clip, refiner_clip, stage_ctx):
    ctx, _ = stage_ctx
    for clip in (base_clip, refiner_clip):
        comfy = CLIPTextEncode("a red circle on grey", clip, ctx=ctx)
        ours = prompt_conditioning(clip, prompt_tokens(clip, "a red circle on grey"))
        assert torch.equal(comfy.embeds, ours.embeds) and torch.equal(comfy.pooled, ours.pooled)
        assert torch.equal(comfy.empty_chunk, ours.empty_chunk) and comfy.sizes == {}


def test_features_are_both_encoders_penultimate_layers_and_the_pooled_is_the_second(base_clip, stage_ctx):
    ctx, _ = stage_ctx
    comfy = CLIPTextEncode("a red circle", base_clip, ctx=ctx)
    hidden_l, _, _ = states(base_clip.tokenizer, base_clip.text_encoder, "a red circle")
    hidden_g, _, pooled = states(base_clip.tokenizer_2, base_clip.text_encoder_2, "a red circle")
    assert comfy.embeds.shape == (1, 77, 32 + 64) and comfy.pooled.shape == pooled.shape == (1, base_clip.text_encoder_2.config.projection_dim)
    assert torch.allclose(comfy.embeds[..., :32], hidden_l[-2], atol=1e-6)
    assert torch.allclose(comfy.embeds[..., 32:], hidden_g[-2], atol=1e-6)
    assert torch.allclose(comfy.pooled, pooled, atol=1e-6)


def test_each_encoder_pulls_weighted_tokens_from_its_own_empty_prompt(base_clip, stage_ctx):
    ctx, _ = stage_ctx
    weighted = CLIPTextEncode("a (red:1.5) circle", base_clip, ctx=ctx)
    plain = CLIPTextEncode("a red circle", base_clip, ctx=ctx)
    red = 2  # BOS, "a", "red": the token's position (one token per word in CLIP's vocabulary)
    for features, (tokenizer, encoder) in ((slice(0, 32), (base_clip.tokenizer, base_clip.text_encoder)),
                                           (slice(32, 96), (base_clip.tokenizer_2, base_clip.text_encoder_2))):
        z = states(tokenizer, encoder, "a red circle")[0][-2][0]
        empty = states(tokenizer, encoder, "")[0][-2][0]
        expected = z.clone()
        expected[red] = empty[red] + (z[red] - empty[red]) * 1.5
        assert torch.allclose(weighted.embeds[0, :, features], expected, atol=1e-5)
    assert torch.allclose(weighted.pooled, plain.pooled, atol=1e-6)  # ComfyUI's pooled embedding is unweighted


def test_set_last_layer_counts_each_encoders_own_depth(base_clip, stage_ctx):
    ctx, _ = stage_ctx
    hidden_l, last_l, _ = states(base_clip.tokenizer, base_clip.text_encoder, "a cat")  # 5 layers
    hidden_g, last_g, _ = states(base_clip.tokenizer_2, base_clip.text_encoder_2, "a cat")  # 10 layers
    last = CLIPTextEncode("a cat", CLIPSetLastLayer(base_clip, -1), ctx=ctx).embeds
    assert torch.allclose(last[..., :32], hidden_l[-1], atol=1e-6) and torch.allclose(last[..., 32:], hidden_g[-1], atol=1e-6)
    deep = CLIPTextEncode("a cat", CLIPSetLastLayer(base_clip, -8), ctx=ctx).embeds
    assert torch.allclose(deep[..., :32], last_l, atol=1e-6)  # past clip_l's depth: its last layer through the norm
    assert torch.allclose(deep[..., 32:], hidden_g[-8], atol=1e-6)
    assert torch.equal(CLIPTextEncode("a cat", CLIPSetLastLayer(base_clip, -2), ctx=ctx).embeds,
                       CLIPTextEncode("a cat", base_clip, ctx=ctx).embeds)  # -2 is the default


def test_sdxl_embeddings_give_each_encoder_its_own_vectors(base_clip, stage_ctx):
    ctx, _ = stage_ctx
    folder = ctx.settings.models_dir / "embeddings"
    folder.mkdir(parents=True, exist_ok=True)
    clip_l, clip_g = torch.randn(2, 32), torch.randn(2, 64)
    save_file({"clip_l": clip_l, "clip_g": clip_g}, str(folder / "xlstyle.safetensors"))
    with_vectors = CLIPTextEncode("a embedding:xlstyle cat", base_clip, ctx=ctx)
    clip = replace(base_clip, embeddings={"xlstyle": torch.cat([clip_l, clip_g], dim=-1)})
    assert torch.equal(CLIPTextEncode("a embedding:xlstyle cat", clip, ctx=ctx).embeds, with_vectors.embeds)
    ours = prompt_conditioning(clip, prompt_tokens(clip, "a xlstyle cat"))  # graphflow's embedding by name
    assert torch.allclose(with_vectors.embeds, ours.embeds, atol=1e-6)
    save_file({"emb_params": torch.randn(2, 32)}, str(folder / "sd1style.safetensors"))
    with pytest.raises(NodeInputError) as error:
        CLIPTextEncode("a embedding:sd1style cat", base_clip, ctx=ctx)
    assert error.value.input == "text" and "32 + 64" in str(error.value)


def test_zero_out_zeroes_the_pooled_embedding_too(base_clip, stage_ctx):
    ctx, _ = stage_ctx
    zeroed = ConditioningZeroOut(CLIPTextEncode("a cat", base_clip, ctx=ctx))
    assert torch.all(zeroed.pooled == 0) and torch.all(zeroed.embeds == 0)


def test_sdxl_node_weights_the_comfyui_way_and_pads_the_shorter_text(base_clip, stage_ctx):
    ctx, _ = stage_ctx
    sizes = dict(width=1024, height=1024, crop_w=0, crop_h=0, target_width=1024, target_height=1024)
    weighted = CLIPTextEncodeSDXL(base_clip, **sizes, text_g="a (red:1.5) circle", text_l="a (red:1.5) circle", ctx=ctx)
    assert torch.equal(weighted.embeds, CLIPTextEncode("a (red:1.5) circle", base_clip, ctx=ctx).embeds)
    long_g = CLIPTextEncodeSDXL(base_clip, **sizes, text_g="cat " * 100, text_l="a dog", ctx=ctx)
    assert long_g.embeds.shape == (1, 154, 96)
    empty_l = CLIPTextEncode("", base_clip, ctx=ctx).embeds[0, :, :32]
    assert torch.equal(long_g.embeds[0, 77:, :32], empty_l)  # clip_l padded with its encoded empty window
