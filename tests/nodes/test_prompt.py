"""nodes.prompt: A1111 emphasis syntax, 75-token chunks with BREAK and comma backtracking, weighted encoding,
textual-inversion positions, and padding positive/negative to the same length.

Parity: plain prompts must tokenize and encode exactly as diffusers' StableDiffusionPipeline does."""
import pytest
import torch

from graphflow.errors import InvalidArgument
from nodes.builtin_models import build_tiny_components
from nodes.prompt import (apply_emphasis, encode_empty_chunk, encode_tokens, pad_conditionings, pad_to_same_chunks,
                          tokenize_prompt)
from nodes.prompt_syntax import BREAK, parse_prompt_attention
from nodes.values import Conditioning, digest_of

BOS, EOS, CAT, DOG, COMMA = 49406, 49407, 2368, 1929, 267  # CLIP BPE ids; "cat" and "dog" are one token each


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_components()


@pytest.fixture(scope="module")
def pipe(tiny):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(**tiny, safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def words(word: str, n: int) -> str:
    return " ".join([word] * n)


# ------------------------------------------------------------------------------------------------ parser

PARSE_TABLE = [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("((x))", [("x", 1.1 * 1.1)]),
    ("(x:1.3)", [("x", 1.3)]),
    ("(x: 0.5 )", [("x", 0.5)]),
    ("(x:.5) (y:+2)", [("x", 0.5), (" ", 1.0), ("y", 2.0)]),
    ("[x]", [("x", 1 / 1.1)]),
    ("[[x]]", [("x", (1 / 1.1) * (1 / 1.1))]),
    ("([x])", [("x", (1 / 1.1) * 1.1)]),
    ("((a) b:1.5)", [("a", 1.1 * 1.5), (" b", 1.5)]),
    (r"\(literal\]", [("(literal]", 1.0)]),
    (r"a \\ b", [("a \\ b", 1.0)]),
    (r"a\b", [("ab", 1.0)]),  # a backslash before anything else is dropped, as in A1111
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("a (b [c", [("a ", 1.0), ("b ", 1.1), ("c", 1.1 / 1.1)]),
    ("close) only]", [("close) only]", 1.0)]),
    ("x:1.3)", [("x:1.3)", 1.0)]),  # a weight with no open bracket is text
    ("time: 5pm", [("time: 5pm", 1.0)]),
    ("(x:1.2.3)", [("x:1.2.3", 1.1)]),  # not a number: text, and the bracket closes normally
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
     [("a ", 1.0), ("house", 1.3 * 1.1 * 1.1), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.5 * 1.1),
      (", sun, ", 1.1), ("sky", 1.1 * 1.1 * 1.1 * 1.1), (".", 1.1)]),
    ("a BREAK b", [("a", 1.0), BREAK, ("b", 1.0)]),
    ("a BREAK BREAK b", [("a", 1.0), BREAK, BREAK, ("b", 1.0)]),
    ("(a BREAK b)", [("a", 1.1), BREAK, ("b", 1.1)]),
    ("BREAKFAST break", [("BREAKFAST break", 1.0)]),
    ("", [("", 1.0)]),
]


@pytest.mark.parametrize("text,expected", PARSE_TABLE)
def test_parse_prompt_attention(text, expected):
    result = parse_prompt_attention(text)
    assert [t for t, _ in result] == [t for t, _ in expected]
    assert [w for _, w in result] == pytest.approx([w for _, w in expected], rel=1e-12)


def test_weights_multiply_in_a1111_order():
    # A1111 multiplies inner brackets first; the float result is exactly its documented 1.5730000000000004
    assert parse_prompt_attention("a (((house:1.3)) b")[1] == ("house", 1.5730000000000004)


# ------------------------------------------------------------------------------------------------ tokenizing

@pytest.mark.parametrize("text", ["a photo of an astronaut riding a horse", "", "  spaced   out  ", words("cat", 75),
                                  "Émile's café, 4k, highly-detailed!"])
def test_plain_prompt_tokenizes_like_diffusers(tiny, text):
    tokenizer = tiny["tokenizer"]
    expected = tokenizer([text], padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    tokens = tokenize_prompt(tokenizer, text)
    assert tokens.chunks == 1
    assert torch.equal(tokens.input_ids, expected.input_ids)
    assert torch.equal(tokens.attention_mask, expected.attention_mask)
    assert torch.equal(tokens.weights, torch.ones(1, 77))
    assert tokens.embedding_vectors is None


def test_pad_token_follows_the_tokenizer():
    from nodes.builtin_models import clip_tokenizer

    tokenizer = clip_tokenizer(pad_token="!")  # SD 2.x pads with "!"
    expected = tokenizer(["a cat"], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    assert torch.equal(tokenize_prompt(tokenizer, "a cat").input_ids, expected)


def chunk_ids(tokens, index):
    return tokens.input_ids[0, 77 * index: 77 * (index + 1)].tolist()


def content(tokens, index):
    """The tokens of chunk ``index`` between BOS and the first EOS."""
    ids = chunk_ids(tokens, index)
    assert ids[0] == BOS
    return ids[1: ids.index(EOS, 1)]


@pytest.mark.parametrize("count,chunks,last", [(75, 1, 75), (76, 2, 1), (150, 2, 75), (151, 3, 1)])
def test_chunk_boundaries(tiny, count, chunks, last):
    tokens = tokenize_prompt(tiny["tokenizer"], words("cat", count))
    assert tokens.chunks == chunks
    assert tokens.input_ids.shape == (1, 77 * chunks)
    assert [len(content(tokens, i)) for i in range(chunks)] == [75] * (chunks - 1) + [last]
    for i in range(chunks):  # every window is BOS + content + EOS + padding
        assert chunk_ids(tokens, i)[0] == BOS and chunk_ids(tokens, i)[-1] == EOS


def test_break_starts_a_new_chunk(tiny):
    tokenizer = tiny["tokenizer"]
    tokens = tokenize_prompt(tokenizer, "cat BREAK dog dog")
    assert tokens.chunks == 2
    assert content(tokens, 0) == [CAT] and content(tokens, 1) == [DOG, DOG]
    assert tokenize_prompt(tokenizer, "cat BREAK").chunks == 1  # a trailing BREAK adds nothing
    assert tokenize_prompt(tokenizer, "BREAK cat").chunks == 2  # a leading one leaves an empty first chunk
    assert tokenize_prompt(tokenizer, "cat BREAK BREAK dog").chunks == 3
    # a full chunk followed by BREAK closes once, not twice
    assert tokenize_prompt(tokenizer, words("cat", 75) + " BREAK dog").chunks == 2


def test_comma_backtrack_moves_the_phrase_after_the_last_comma(tiny):
    tokenizer = tiny["tokenizer"]
    text = words("cat", 70) + ", " + words("dog", 10)
    plain = tokenize_prompt(tokenizer, text)
    assert content(plain, 0) == [CAT] * 70 + [COMMA] + [DOG] * 4 and content(plain, 1) == [DOG] * 6
    backtracked = tokenize_prompt(tokenizer, text, comma_backtrack=True)
    assert content(backtracked, 0) == [CAT] * 70 + [COMMA] and content(backtracked, 1) == [DOG] * 10
    # the weights travel with their tokens
    weighted = tokenize_prompt(tokenizer, words("cat", 70) + ", (" + words("dog", 10) + ":1.5)", comma_backtrack=True)
    assert weighted.weights[0, 77 + 1: 77 + 11].tolist() == [1.5] * 10
    assert weighted.weights[0, 72: 77].tolist() == [1.0] * 5  # EOS and padding of chunk 0


def test_comma_backtrack_only_within_the_window(tiny):
    tokenizer = tiny["tokenizer"]
    text = words("cat", 40) + ", " + words("dog", 40)  # the comma is 34 tokens back when the chunk fills
    assert torch.equal(tokenize_prompt(tokenizer, text, comma_backtrack=True).input_ids,
                       tokenize_prompt(tokenizer, text).input_ids)
    assert content(tokenize_prompt(tokenizer, text, comma_backtrack=True, backtrack_window=40), 0)[-1] == COMMA


def test_token_weights(tiny):
    tokens = tokenize_prompt(tiny["tokenizer"], "(cat:1.5) [dog] cat")
    assert tokens.input_ids[0, :5].tolist() == [BOS, CAT, DOG, CAT, EOS]
    assert tokens.weights[0, :5].tolist() == pytest.approx([1.0, 1.5, 1 / 1.1, 1.0, 1.0])
    assert tokens.weights[0, 5:].eq(1.0).all()


# ------------------------------------------------------------------------------------------------ encoding

@pytest.mark.parametrize("text", ["a photo of an astronaut riding a horse", "", words("cat", 75)])
def test_plain_prompt_encodes_exactly_like_diffusers(tiny, pipe, text):
    tokens = tokenize_prompt(tiny["tokenizer"], text)
    ours = encode_tokens(tiny["text_encoder"], tokens.input_ids, tokens.weights, clip_skip=1)
    with torch.no_grad():
        expected, _ = pipe.encode_prompt(text, "cpu", 1, False)
    assert ours.dtype == expected.dtype
    assert torch.equal(ours, expected)


def test_clip_skip_uses_the_earlier_layer_and_the_final_norm(tiny):
    encoder = tiny["text_encoder"]
    tokens = tokenize_prompt(tiny["tokenizer"], "a red car")
    with torch.no_grad():
        hidden = encoder(tokens.input_ids, output_hidden_states=True).hidden_states
        expected = encoder.final_layer_norm(hidden[-2])  # diffusers' clip_skip=1 == A1111's 2
    assert torch.equal(encode_tokens(encoder, tokens.input_ids, clip_skip=2), expected)
    with pytest.raises(InvalidArgument) as error:  # a helper's error names its own argument; nodes translate
        encode_tokens(encoder, tokens.input_ids, clip_skip=6)  # the tiny encoder has 5 layers
    assert error.value.argument == "clip_skip"


@pytest.mark.parametrize("clip_skip", [1, 2])
def test_encoders_wrapping_a_text_model_encode_the_same(tiny, clip_skip):
    """CLIPTextModelWithProjection keeps its transformer under ``.text_model`` (transformers 5's CLIPTextModel
    does not): both layouts go through the same layers and the same final layer norm."""
    from transformers import CLIPTextModelWithProjection

    encoder = tiny["text_encoder"]
    wrapped = CLIPTextModelWithProjection(encoder.config).eval()
    missing, unexpected = wrapped.load_state_dict({f"text_model.{k}": v for k, v in encoder.state_dict().items()},
                                                  strict=False)
    assert not unexpected and all(k.startswith("text_projection") for k in missing)
    tokens = tokenize_prompt(tiny["tokenizer"], "a red car")
    assert torch.equal(encode_tokens(wrapped, tokens.input_ids, clip_skip=clip_skip),
                       encode_tokens(encoder, tokens.input_ids, clip_skip=clip_skip))


def test_weights_scale_the_embeddings(tiny):
    encoder, tokenizer = tiny["text_encoder"], tiny["tokenizer"]
    plain = tokenize_prompt(tokenizer, "cat dog")
    weighted = tokenize_prompt(tokenizer, "(cat:1.5) dog")
    assert torch.equal(plain.input_ids, weighted.input_ids)
    base = encode_tokens(encoder, plain.input_ids, plain.weights)
    scaled = encode_tokens(encoder, weighted.input_ids, weighted.weights, emphasis="no_norm")
    assert torch.allclose(scaled[0, 1], base[0, 1] * 1.5)
    assert torch.equal(scaled[0, 2:], base[0, 2:])
    assert torch.equal(encode_tokens(encoder, weighted.input_ids, weighted.weights, emphasis="none"), base)


def _with_final_norm_bias(encoder, bias: float):
    """A copy of the text encoder whose final LayerNorm has a bias, as every real SD text encoder has, so the
    embeddings have a mean that is not float noise."""
    import copy

    biased = copy.deepcopy(encoder)
    with torch.no_grad():
        biased.final_layer_norm.bias.fill_(bias)
    return biased


def test_original_emphasis_restores_the_mean_and_keeps_the_relative_weight(tiny):
    encoder = _with_final_norm_bias(tiny["text_encoder"], 0.5)
    plain = tokenize_prompt(tiny["tokenizer"], "cat dog")
    weighted = tokenize_prompt(tiny["tokenizer"], "(cat:1.5) dog")
    base = encode_tokens(encoder, plain.input_ids, plain.weights)
    original = encode_tokens(encoder, weighted.input_ids, weighted.weights, emphasis="original")
    scale = base.abs().mean().item()  # tolerances relative to the values' size, never to a mean near zero
    assert abs(base.mean().item()) > 0.1 * scale
    assert abs(original.mean().item() - base.mean().item()) <= 1e-5 * scale  # the mean is restored
    assert not torch.allclose(original, base)
    # one common factor for every value: "cat" stays 1.5 times as strong relative to "dog" as before
    ratio = lambda e: (e[0, 1].norm() / e[0, 2].norm()).item()
    assert ratio(original) == pytest.approx(1.5 * ratio(base), rel=1e-4)
    # and that factor is positive: no embedding changes sign
    assert torch.equal(torch.sign(original), torch.sign(encode_tokens(encoder, weighted.input_ids, weighted.weights, emphasis="no_norm")))


def test_original_emphasis_never_divides_by_a_mean_that_is_float_noise(tiny):
    """The tiny CLIP's final LayerNorm has no bias: every token's embedding has mean 0 up to float noise, and
    A1111's factor mean_before / mean_after would be noise (it was -6.5, flipping every sign). Then
    "original" leaves the weighted values as "no_norm" does."""
    encoder, tokenizer = tiny["text_encoder"], tiny["tokenizer"]
    weighted = tokenize_prompt(tokenizer, "(cat:1.5) dog")
    no_norm = encode_tokens(encoder, weighted.input_ids, weighted.weights, emphasis="no_norm")
    assert abs(no_norm.mean().item()) < 1e-5 * no_norm.abs().mean().item()  # the premise: a mean of noise
    assert torch.equal(encode_tokens(encoder, weighted.input_ids, weighted.weights, emphasis="original"), no_norm)


def test_original_emphasis_never_flips_the_sign_of_the_embeddings():
    hidden = torch.ones(1, 77, 4)
    hidden[0, 1] = -3.0  # the weighted token outweighs the rest with the opposite sign
    weights = torch.ones(1, 77)
    weights[0, 1] = 30.0
    assert torch.equal(apply_emphasis(hidden, weights, "original"), apply_emphasis(hidden, weights, "no_norm"))


def test_unit_weights_leave_embeddings_bit_identical():
    hidden = torch.randn(1, 77, 8)
    assert apply_emphasis(hidden, torch.ones(1, 77)) is hidden


def test_each_window_is_encoded_on_its_own(tiny):
    encoder, tokenizer = tiny["text_encoder"], tiny["tokenizer"]
    tokens = tokenize_prompt(tokenizer, words("cat", 80) + " BREAK (dog:1.2)")
    assert tokens.chunks == 3
    embeds = encode_tokens(encoder, tokens.input_ids, tokens.weights)
    assert embeds.shape == (1, 3 * 77, 32)
    for i in range(3):
        window = slice(77 * i, 77 * (i + 1))
        alone = encode_tokens(encoder, tokens.input_ids[:, window], tokens.weights[:, window])
        assert torch.equal(embeds[:, window], alone)


def test_long_negative_pads_against_short_positive(tiny):
    encoder, tokenizer = tiny["text_encoder"], tiny["tokenizer"]
    negative_text = ", ".join(["blurry", "lowres", "bad anatomy", "extra fingers"] * 20)
    negative = tokenize_prompt(tokenizer, negative_text)
    assert len(tokenizer(negative_text, add_special_tokens=False).input_ids) > 200
    assert negative.chunks == 3
    positive = tokenize_prompt(tokenizer, "a cat")
    neg = encode_tokens(encoder, negative.input_ids, negative.weights)
    pos = encode_tokens(encoder, positive.input_ids, positive.weights)
    empty = encode_empty_chunk(tokenizer, encoder)
    padded_pos, same_neg = pad_to_same_chunks(pos, neg, empty)
    assert padded_pos.shape == same_neg.shape == (1, 231, 32)
    assert same_neg is neg
    assert torch.equal(padded_pos[:, :77], pos)
    assert torch.equal(padded_pos[:, 77:154], empty[0:1]) and torch.equal(padded_pos[:, 154:], empty[0:1])
    # the same through CONDITIONING values, as the sampler does it
    a, b = pad_conditionings(Conditioning(pos, ("a cat",), empty), Conditioning(neg, (negative_text,), empty))
    assert torch.equal(a, padded_pos) and b is neg
    with pytest.raises(InvalidArgument) as error:
        pad_conditionings(Conditioning(pos), Conditioning(neg))  # nothing to pad with
    assert error.value.argument == "positive"  # the shorter one


def test_empty_chunk_is_the_empty_prompt(tiny, pipe):
    with torch.no_grad():
        _, uncond = pipe.encode_prompt("x", "cpu", 1, True, negative_prompt=None)
    assert torch.equal(encode_empty_chunk(tiny["tokenizer"], tiny["text_encoder"]), uncond)


def test_the_empty_prompt_is_encoded_once_per_text_encoder_and_clip_skip():
    fresh = build_tiny_components()  # an encoder no other test has used
    encoder, tokenizer = fresh["text_encoder"], fresh["tokenizer"]
    calls = []
    embeddings = getattr(encoder, "text_model", encoder).embeddings  # encode_tokens runs the layers itself
    hook = embeddings.register_forward_hook(lambda module, args, output: calls.append(1))
    try:
        first = encode_empty_chunk(tokenizer, encoder, clip_skip=3)
        again = encode_empty_chunk(tokenizer, encoder, clip_skip=3)
        assert again is first
        assert len(calls) == 1
        assert not torch.equal(encode_empty_chunk(tokenizer, encoder, clip_skip=1), first)
        assert len(calls) == 2
    finally:
        hook.remove()


# ------------------------------------------------------------------------------------------------ textual inversion

def token_vectors(encoder, ids):
    return encoder.get_input_embeddings().weight[ids].detach().clone()


def test_embedding_name_expands_to_its_vectors(tiny):
    encoder, tokenizer = tiny["text_encoder"], tiny["tokenizer"]
    red_car = tokenizer("red car", add_special_tokens=False).input_ids
    # an embedding whose vectors ARE the token embeddings of "red car" must encode exactly like "red car"
    embeddings = {"RedCar": token_vectors(encoder, red_car), "other": torch.zeros(1, 32)}
    before = digest_of(encoder)
    for text in ("a redcar cat", "a embedding:RedCar cat", "a (redcar:1.0) cat"):
        tokens = tokenize_prompt(tokenizer, text, embeddings=embeddings)
        assert tokens.input_ids[0, :6].tolist() == [BOS, 320, -1, -2, CAT, EOS]
        assert tokens.embedding_vectors.shape == (2, 32)
        reference = tokenize_prompt(tokenizer, "a red car cat")
        ours = encode_tokens(encoder, tokens.input_ids, tokens.weights, embedding_vectors=tokens.embedding_vectors)
        assert torch.equal(ours, encode_tokens(encoder, reference.input_ids, reference.weights))
    assert digest_of(encoder) == before  # the shared text encoder was not modified


def test_embedding_weights_and_reuse(tiny):
    embeddings = {"neg": torch.randn(3, 32)}
    tokens = tokenize_prompt(tiny["tokenizer"], "neg, (neg:1.3)", embeddings=embeddings)
    ids = tokens.input_ids[0, 1:8].tolist()
    assert ids == [-1, -2, -3, COMMA, -1, -2, -3]  # the vectors are stored once
    assert tokens.weights[0, 5:8].tolist() == pytest.approx([1.3] * 3)
    assert tokens.embedding_vectors.shape == (3, 32)


def test_embedding_is_never_split_across_chunks(tiny):
    embeddings = {"wide": torch.randn(4, 32)}
    tokens = tokenize_prompt(tiny["tokenizer"], words("cat", 73) + " wide dog", embeddings=embeddings)
    assert tokens.chunks == 2
    assert content(tokens, 0) == [CAT] * 73
    assert content(tokens, 1) == [-1, -2, -3, -4, DOG]


def test_names_match_whole_words_only(tiny):
    embeddings = {"neg": torch.randn(1, 32)}
    tokens = tokenize_prompt(tiny["tokenizer"], "negative negs neg", embeddings=embeddings)
    ids = tokens.input_ids[0].tolist()
    assert ids.count(-1) == 1


def test_explicit_names_end_before_punctuation(tiny):
    embeddings = {"bad-hands-5": torch.randn(1, 32), "v1.2": torch.randn(2, 32)}
    tokens = tokenize_prompt(tiny["tokenizer"], "(embedding:bad-hands-5:1.2), embedding:v1.2.", embeddings=embeddings)
    assert tokens.input_ids[0, :6].tolist() == [BOS, -1, COMMA, -2, -3, 269]  # 269 = "."
    assert tokens.weights[0, 1].item() == pytest.approx(1.2)


def test_unknown_explicit_embedding_is_an_error(tiny):
    with pytest.raises(InvalidArgument) as error:
        tokenize_prompt(tiny["tokenizer"], "a embedding:missing cat", embeddings={"neg": torch.randn(1, 32)})
    assert error.value.argument == "text" and "missing" in str(error.value)


def test_encoder_width_mismatch_is_reported(tiny):
    tokens = tokenize_prompt(tiny["tokenizer"], "x", embeddings={"x": torch.randn(1, 768)})
    with pytest.raises(InvalidArgument, match="width") as error:
        encode_tokens(tiny["text_encoder"], tokens.input_ids, tokens.weights, embedding_vectors=tokens.embedding_vectors)
    assert error.value.argument == "text_encoder"


# ------------------------------------------------------------------------------------------------ socket values

def test_prompt_values_for_the_text_nodes(tiny, pipe):
    from nodes.conditioning import prompt_conditioning, prompt_tokens
    from nodes.values import Clip

    clip = Clip(tiny["tokenizer"], tiny["text_encoder"], "sd1", "tiny-sd", embeddings={"neg": torch.randn(2, 32)})
    plain = prompt_tokens(clip, "a photo of a cat")
    assert plain.text == ("a photo of a cat",) and plain.chunks == 1 and plain.embedding_vectors is None
    conditioning = prompt_conditioning(clip, plain)
    with torch.no_grad():
        expected, uncond = pipe.encode_prompt("a photo of a cat", "cpu", 1, True)
    assert torch.equal(conditioning.embeds, expected) and torch.equal(conditioning.empty_chunk, uncond)
    long = prompt_tokens(clip, words("cat", 100) + ", neg")
    assert long.chunks == 2 and long.embedding_vectors.shape == (2, 32)
    assert prompt_conditioning(clip, long, clip_skip=2).embeds.shape == (1, 154, 32)
