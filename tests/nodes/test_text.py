"""Tokenize, CLIPTextEncode and TextEncode: diffusers' encode_prompt, split into nodes."""
import copy

import pytest
import torch

from graphflow.errors import NodeInputError
from nodes.text import CLIPTextEncode, TextEncode, Tokenize
from nodes.values import Clip
from tests.nodes.stage_helpers import call, pipeline

PROMPT = "a photo of an astronaut riding a horse on mars"


@pytest.fixture(scope="module")
def sd_pipe(tiny_parts):
    return pipeline(tiny_parts, "euler")


def test_tokenize_pads_to_the_77_token_window_like_diffusers(sd_clip):
    tokens = call(Tokenize, clip=sd_clip, text=PROMPT)
    expected = sd_clip.tokenizer(PROMPT, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    assert tokens.input_ids.shape == (1, 77)
    assert torch.equal(tokens.input_ids, expected.input_ids)
    assert torch.equal(tokens.attention_mask, expected.attention_mask)
    assert torch.equal(tokens.weights, torch.ones(1, 77))
    assert tokens.text == (PROMPT,) and tokens.chunks == 1


def test_empty_prompt_is_start_token_then_padding(sd_clip):
    ids = call(Tokenize, clip=sd_clip, text="").input_ids[0]
    tokenizer = sd_clip.tokenizer
    assert ids[0] == tokenizer.bos_token_id
    assert torch.all(ids[1:] == tokenizer.pad_token_id)


def test_long_prompt_is_cut_to_the_window_with_a_warning(sd_clip, stage_ctx):
    ctx, recorder = stage_ctx
    long_prompt = " ".join(["castle"] * 100)
    tokens = call(Tokenize, ctx=ctx, clip=sd_clip, text=long_prompt)
    assert tokens.input_ids.shape == (1, 77)
    assert tokens.input_ids[0, -1] == sd_clip.tokenizer.eos_token_id
    assert len(recorder.warnings) == 1 and "castle" in recorder.warnings[0]
    call(Tokenize, ctx=ctx, clip=sd_clip, text=PROMPT)
    assert len(recorder.warnings) == 1, "a prompt that fits raises no warning"


def test_encode_equals_encode_prompt(sd_clip, sd_pipe):
    ours = call(CLIPTextEncode, clip=sd_clip, tokens=call(Tokenize, clip=sd_clip, text=PROMPT))
    theirs, _ = sd_pipe.encode_prompt(PROMPT, "cpu", 1, False)
    assert ours.embeds.shape == (1, 77, 32)
    assert torch.equal(ours.embeds, theirs)
    assert ours.text == (PROMPT,)


def test_empty_negative_equals_diffusers_unconditional_embedding(sd_clip, sd_pipe):
    ours = call(TextEncode, clip=sd_clip, text="")
    _, uncond = sd_pipe.encode_prompt(PROMPT, "cpu", 1, True, negative_prompt=None)
    assert torch.equal(ours.embeds, uncond)


@pytest.mark.parametrize("clip_skip", [2, 3, 5])
def test_clip_skip_uses_a1111_numbering(sd_clip, clip_skip):
    # diffusers' rule for its clip_skip=n: hidden_states[-(n + 1)] through the final layer norm. Ours counts
    # the last layer as 1 (A1111), so ours = diffusers' + 1. (diffusers 0.42.1 cannot run its own clip_skip
    # path with transformers 5, which dropped `.text_model`, so the rule is spelled out here.)
    encoder = sd_clip.text_encoder
    ids = call(Tokenize, clip=sd_clip, text=PROMPT)
    diffusers_clip_skip = clip_skip - 1
    with torch.no_grad():
        hidden = encoder(ids.input_ids, output_hidden_states=True).hidden_states[-(diffusers_clip_skip + 1)]
        expected = encoder.final_layer_norm(hidden)
    ours = call(CLIPTextEncode, clip=sd_clip, tokens=ids, clip_skip=clip_skip)
    assert torch.equal(ours.embeds, expected)
    last = call(CLIPTextEncode, clip=sd_clip, tokens=ids, clip_skip=1)
    assert not torch.allclose(ours.embeds, last.embeds)


def test_clip_skip_beyond_the_encoder_depth_is_refused(sd_clip):
    tokens = call(Tokenize, clip=sd_clip, text=PROMPT)
    with pytest.raises(NodeInputError) as error:
        call(CLIPTextEncode, clip=sd_clip, tokens=tokens, clip_skip=6)  # the tiny encoder has 5 layers
    assert error.value.input == "clip_skip" and error.value.received == 6


def test_attention_mask_is_used_only_when_the_encoder_asks_for_it(tiny_parts, sd_clip):
    encoder = copy.deepcopy(tiny_parts["text_encoder"])
    encoder.config.use_attention_mask = True
    masked_clip = Clip(sd_clip.tokenizer, encoder, family="sd1", name="masked")
    ours = call(TextEncode, clip=masked_clip, text=PROMPT)
    pipe = pipeline({**tiny_parts, "text_encoder": encoder}, "euler")
    theirs, _ = pipe.encode_prompt(PROMPT, "cpu", 1, False)
    assert torch.equal(ours.embeds, theirs)
    plain = call(TextEncode, clip=sd_clip, text=PROMPT)
    assert not torch.equal(ours.embeds, plain.embeds), "the mask changes the padding positions' states"


def test_text_encode_is_tokenize_then_encode(sd_clip):
    chained = call(CLIPTextEncode, clip=sd_clip, tokens=call(Tokenize, clip=sd_clip, text=PROMPT), clip_skip=2)
    assert torch.equal(call(TextEncode, clip=sd_clip, text=PROMPT, clip_skip=2).embeds, chained.embeds)


def test_encoding_is_deterministic_and_leaves_inputs_untouched(sd_clip):
    clip_digest = sd_clip.__graphflow_digest__()
    tokens = call(Tokenize, clip=sd_clip, text=PROMPT)
    tokens_digest = tokens.__graphflow_digest__()
    first = call(CLIPTextEncode, clip=sd_clip, tokens=tokens, clip_skip=2)
    second = call(CLIPTextEncode, clip=sd_clip, tokens=tokens, clip_skip=2)
    assert torch.equal(first.embeds, second.embeds)
    call(TextEncode, clip=sd_clip, text=PROMPT)
    assert tokens.__graphflow_digest__() == tokens_digest
    assert sd_clip.__graphflow_digest__() == clip_digest


def test_clip_skip_bounds_are_validated():
    from pydantic import ValidationError

    from graphflow.node import spec_of

    literals = spec_of(CLIPTextEncode).literals
    for bad in (0, 13):
        with pytest.raises(ValidationError):
            literals.model_validate({"clip_skip": bad})
