"""Tokenize, CLIPTextEncode and TextEncode: diffusers' encode_prompt for plain prompts, A1111 syntax on top."""
import copy

import pytest
import torch

from graphflow.errors import NodeInputError
from nodes.text import CLIPTextEncode, TextEncode, Tokenize
from nodes.values import Clip
from tests.nodes.runctx import run_node
from tests.nodes.stage_helpers import pipeline

PROMPT = "a photo of an astronaut riding a horse on mars"


@pytest.fixture(scope="module")
def sd_pipe(tiny_parts):
    return pipeline(tiny_parts, "euler")


def test_tokenize_pads_to_the_77_token_window_like_diffusers(sd_clip):
    tokens = run_node(Tokenize, clip=sd_clip, text=PROMPT)
    expected = sd_clip.tokenizer(PROMPT, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    assert tokens.input_ids.shape == (1, 77)
    assert torch.equal(tokens.input_ids, expected.input_ids)
    assert torch.equal(tokens.attention_mask, expected.attention_mask)
    assert torch.equal(tokens.weights, torch.ones(1, 77))
    assert tokens.text == (PROMPT,) and tokens.chunks == 1


def test_empty_prompt_is_start_token_then_padding(sd_clip):
    ids = run_node(Tokenize, clip=sd_clip, text="").input_ids[0]
    tokenizer = sd_clip.tokenizer
    assert ids[0] == tokenizer.bos_token_id
    assert torch.all(ids[1:] == tokenizer.pad_token_id)


def test_long_prompt_takes_more_windows_instead_of_being_cut(sd_clip):
    long_prompt = " ".join(["castle"] * 100)
    tokens = run_node(Tokenize, clip=sd_clip, text=long_prompt)
    assert tokens.chunks == 2 and tokens.input_ids.shape == tokens.weights.shape == (1, 154)
    castle = sd_clip.tokenizer("castle", add_special_tokens=False).input_ids[0]
    assert (tokens.input_ids[0] == castle).sum() == 100, "no token was dropped"
    conditioning = run_node(CLIPTextEncode, clip=sd_clip, tokens=tokens)
    assert conditioning.embeds.shape == (1, 154, 32)
    assert conditioning.empty_chunk.shape == (1, 77, 32), "carries the empty prompt to pad against a shorter one"


def test_comma_backtrack_is_a_tokenize_option(sd_clip):
    text = " ".join(["castle"] * 70) + ", " + " ".join(["tower"] * 10)
    plain = run_node(Tokenize, clip=sd_clip, text=text)
    backtracked = run_node(Tokenize, clip=sd_clip, text=text, comma_backtrack=True)
    assert plain.chunks == backtracked.chunks == 2
    tower = sd_clip.tokenizer("tower", add_special_tokens=False).input_ids[0]
    assert (plain.input_ids[0, 77:] == tower).sum() == 6
    assert (backtracked.input_ids[0, 77:] == tower).sum() == 10, "the whole phrase moved to the next window"


def test_emphasis_modes(sd_clip):
    import copy

    # the tiny CLIP's final LayerNorm has no bias (mean 0 up to noise); give it one, as real encoders have,
    # so that restoring the mean is measurable
    encoder = copy.deepcopy(sd_clip.text_encoder)
    with torch.no_grad():
        encoder.final_layer_norm.bias.fill_(0.5)
    clip = sd_clip.replace(text_encoder=encoder)
    plain = run_node(TextEncode, clip=clip, text="a red car")
    weighted = run_node(Tokenize, clip=clip, text="a (red:1.5) car")
    original = run_node(CLIPTextEncode, clip=clip, tokens=weighted)
    no_norm = run_node(CLIPTextEncode, clip=clip, tokens=weighted, emphasis="no_norm")
    ignored = run_node(CLIPTextEncode, clip=clip, tokens=weighted, emphasis="none")
    assert torch.equal(ignored.embeds, plain.embeds)
    assert torch.allclose(no_norm.embeds[0, 2], plain.embeds[0, 2] * 1.5)  # BOS, "a", "red"
    assert not torch.allclose(original.embeds, no_norm.embeds)
    scale = plain.embeds.abs().mean().item()
    assert abs(original.embeds.mean().item() - plain.embeds.mean().item()) <= 1e-5 * scale  # "original": mean restored


def test_text_encode_passes_every_option_on(sd_clip):
    text = " ".join(["castle"] * 70) + ", (tower:1.3) " + " ".join(["tower"] * 10)
    chained = run_node(CLIPTextEncode, clip=sd_clip, tokens=run_node(Tokenize, clip=sd_clip, text=text, comma_backtrack=True),
                   clip_skip=2, emphasis="no_norm")
    one_node = run_node(TextEncode, clip=sd_clip, text=text, clip_skip=2, emphasis="no_norm", comma_backtrack=True)
    assert torch.equal(one_node.embeds, chained.embeds)
    assert not torch.equal(one_node.embeds, run_node(TextEncode, clip=sd_clip, text=text, clip_skip=2).embeds)


def test_embedding_names_in_prompts(sd_clip):
    vectors = torch.randn(2, 32, generator=torch.Generator().manual_seed(0))
    clip = Clip(sd_clip.tokenizer, sd_clip.text_encoder, family="sd1", name="tiny-sd", embeddings={"shiny": vectors})
    tokens = run_node(Tokenize, clip=clip, text="a shiny car")
    assert tokens.input_ids[0, 2:4].tolist() == [-1, -2] and torch.equal(tokens.embedding_vectors, vectors)
    assert not torch.equal(run_node(CLIPTextEncode, clip=clip, tokens=tokens).embeds,
                           run_node(TextEncode, clip=sd_clip, text="a shiny car").embeds)


def test_encode_equals_encode_prompt(sd_clip, sd_pipe):
    ours = run_node(CLIPTextEncode, clip=sd_clip, tokens=run_node(Tokenize, clip=sd_clip, text=PROMPT))
    theirs, _ = sd_pipe.encode_prompt(PROMPT, "cpu", 1, False)
    assert ours.embeds.shape == (1, 77, 32)
    assert torch.equal(ours.embeds, theirs)
    assert ours.text == (PROMPT,)


def test_empty_negative_equals_diffusers_unconditional_embedding(sd_clip, sd_pipe):
    ours = run_node(TextEncode, clip=sd_clip, text="")
    _, uncond = sd_pipe.encode_prompt(PROMPT, "cpu", 1, True, negative_prompt=None)
    assert torch.equal(ours.embeds, uncond)


@pytest.mark.parametrize("clip_skip", [2, 3, 5])
def test_clip_skip_uses_a1111_numbering(sd_clip, clip_skip):
    # diffusers' rule for its clip_skip=n: hidden_states[-(n + 1)] through the final layer norm. Ours counts
    # the last layer as 1 (A1111), so ours = diffusers' + 1. (diffusers 0.42.1 cannot run its own clip_skip
    # path with transformers 5, which dropped `.text_model`, so the rule is spelled out here.)
    encoder = sd_clip.text_encoder
    ids = run_node(Tokenize, clip=sd_clip, text=PROMPT)
    diffusers_clip_skip = clip_skip - 1
    with torch.no_grad():
        hidden = encoder(ids.input_ids, output_hidden_states=True).hidden_states[-(diffusers_clip_skip + 1)]
        expected = encoder.final_layer_norm(hidden)
    ours = run_node(CLIPTextEncode, clip=sd_clip, tokens=ids, clip_skip=clip_skip)
    assert torch.equal(ours.embeds, expected)
    last = run_node(CLIPTextEncode, clip=sd_clip, tokens=ids, clip_skip=1)
    assert not torch.allclose(ours.embeds, last.embeds)


def test_clip_skip_beyond_the_encoder_depth_is_refused(sd_clip):
    tokens = run_node(Tokenize, clip=sd_clip, text=PROMPT)
    with pytest.raises(NodeInputError) as error:
        run_node(CLIPTextEncode, clip=sd_clip, tokens=tokens, clip_skip=6)  # the tiny encoder has 5 layers
    assert error.value.input == "clip_skip" and error.value.received == 6


def test_attention_mask_is_used_only_when_the_encoder_asks_for_it(tiny_parts, sd_clip):
    encoder = copy.deepcopy(tiny_parts["text_encoder"])
    encoder.config.use_attention_mask = True
    masked_clip = Clip(sd_clip.tokenizer, encoder, family="sd1", name="masked")
    ours = run_node(TextEncode, clip=masked_clip, text=PROMPT)
    pipe = pipeline({**tiny_parts, "text_encoder": encoder}, "euler")
    theirs, _ = pipe.encode_prompt(PROMPT, "cpu", 1, False)
    assert torch.equal(ours.embeds, theirs)
    plain = run_node(TextEncode, clip=sd_clip, text=PROMPT)
    assert not torch.equal(ours.embeds, plain.embeds), "the mask changes the padding positions' states"


def test_text_encode_is_tokenize_then_encode(sd_clip):
    chained = run_node(CLIPTextEncode, clip=sd_clip, tokens=run_node(Tokenize, clip=sd_clip, text=PROMPT), clip_skip=2)
    assert torch.equal(run_node(TextEncode, clip=sd_clip, text=PROMPT, clip_skip=2).embeds, chained.embeds)


def test_encoding_is_deterministic_and_leaves_inputs_untouched(sd_clip):
    clip_digest = sd_clip.__graphflow_digest__()
    tokens = run_node(Tokenize, clip=sd_clip, text=PROMPT)
    tokens_digest = tokens.__graphflow_digest__()
    first = run_node(CLIPTextEncode, clip=sd_clip, tokens=tokens, clip_skip=2)
    second = run_node(CLIPTextEncode, clip=sd_clip, tokens=tokens, clip_skip=2)
    assert torch.equal(first.embeds, second.embeds)
    run_node(TextEncode, clip=sd_clip, text=PROMPT)
    assert tokens.__graphflow_digest__() == tokens_digest
    assert sd_clip.__graphflow_digest__() == clip_digest


def test_clip_skip_bounds_are_validated():
    from pydantic import ValidationError

    from graphflow.node import spec_of

    literals = spec_of(CLIPTextEncode).literals
    for bad in (0, 13):
        with pytest.raises(ValidationError):
            literals.model_validate({"clip_skip": bad})
    with pytest.raises(ValidationError):
        literals.model_validate({"emphasis": "louder"})


def test_the_prompt_helpers_errors_are_named_after_the_nodes_inputs(sd_clip):
    wide = sd_clip.replace(embeddings={"shiny": torch.randn(1, 768)})  # trained for a wider text encoder
    with pytest.raises(NodeInputError) as error:
        run_node(TextEncode, clip=wide, text="a shiny car")
    assert error.value.input == "clip" and "width" in error.value.message
    with pytest.raises(NodeInputError) as error:
        run_node(Tokenize, clip=sd_clip, text="a embedding:absent cat")
    assert error.value.input == "text" and "absent" in error.value.received


# -- long prompts: cancel between windows, a server's bound on the windows ---------------------------------------
def test_encoding_reports_each_window_and_stops_when_cancelled(sd_clip, tmp_path):
    from graphflow.errors import Cancelled
    from tests.nodes.runctx import make_ctx

    tokens = run_node(Tokenize, clip=sd_clip, text="a cat BREAK " * 40)
    assert tokens.chunks == 40
    ctx, recorder = make_ctx(tmp_path)
    run_node(CLIPTextEncode, ctx=ctx, clip=sd_clip, tokens=tokens)
    assert recorder.progress == [(i, 40) for i in range(1, 41)]
    ctx, recorder = make_ctx(tmp_path, cancel_after_progress=3)
    with pytest.raises(Cancelled):
        run_node(TextEncode, ctx=ctx, clip=sd_clip, text="a cat BREAK " * 40)
    assert len(recorder.progress) == 3  # stopped after the third of 40 windows


def test_tokenizing_a_huge_prompt_stops_when_cancelled(sd_clip, tmp_path):
    from graphflow.errors import Cancelled
    from tests.nodes.runctx import make_ctx

    ctx, _ = make_ctx(tmp_path)
    ctx.cancel_token.cancel()
    with pytest.raises(Cancelled):
        run_node(Tokenize, ctx=ctx, clip=sd_clip, text="BREAK " * 3000)


@pytest.mark.parametrize("node, inputs, input_name", [
    (Tokenize, {}, "text"), (TextEncode, {}, "text"), (CLIPTextEncode, {"tokens": None}, "tokens")])
def test_a_servers_prompt_chunk_limit_is_refused_naming_the_input(sd_clip, tmp_path, node, inputs, input_name):
    from dataclasses import replace

    from tests.nodes.runctx import make_ctx

    text = "BREAK ".join(["a cat "] * 5)  # 5 windows
    ctx, _ = make_ctx(tmp_path)
    ctx.settings = replace(ctx.settings, limits={"prompt_chunks": 4})
    if "tokens" in inputs:
        inputs = {"tokens": run_node(Tokenize, clip=sd_clip, text=text)}
    else:
        inputs = {"text": text}
    with pytest.raises(NodeInputError) as refused:
        run_node(node, ctx=ctx, clip=sd_clip, **inputs)
    assert refused.value.input == input_name
    assert "prompt_chunks" in refused.value.message and "5" in refused.value.message and "4" in refused.value.message
    ctx.settings = replace(ctx.settings, limits={"prompt_chunks": 5})
    run_node(node, ctx=ctx, clip=sd_clip, **inputs)  # at the limit: fine
