"""ComfyUI's prompt weighting: its bracket syntax, its 75-token windows, and tokens weighted against the empty prompt."""
import pytest
import torch

from nodes.comfy.prompt import MissingEmbedding, encode_weighted, parse_weights, tokenize_weighted
from nodes.prompt import encode_tokens, text_ids

BOS, EOS = 49406, 49407


@pytest.mark.parametrize("text, runs", [
    ("a (red:1.5) cat", [("a ", 1.0), ("red", 1.5), (" cat", 1.0)]),
    ("((red))", [("red", 1.1 * 1.1)]),
    ("((red:1.5))", [("red", 1.5)]),              # an explicit weight is absolute, not multiplied by the outer 1.1
    ("(a (b) c:0.5)", [("a ", 0.5), ("b", 0.5 * 1.1), (" c", 0.5)]),
    ("[red] cat", [("[red] cat", 1.0)]),          # square brackets are plain text in ComfyUI
    (r"\(red\) (cat)", [("(red) ", 1.0), ("cat", 1.1)]),
    ("(red:big)", [("red:big", 1.1)]),            # not a number: the colon stays text
    ("a (red", [("a ", 1.0), ("(red", 1.0)]),     # never closed: literal
    ("", []),
])
def test_bracket_syntax(text, runs):
    got = parse_weights(text)
    assert [t for t, _ in got] == [t for t, _ in runs]
    assert [w for _, w in got] == pytest.approx([w for _, w in runs])


def no_embeddings(name):
    return None


def window(ids, pad=EOS):
    return [BOS, *ids, EOS] + [pad] * (75 - len(ids))


def test_a_short_prompt_is_one_window_with_a_weight_per_token(sd_clip):
    tokens = tokenize_weighted(sd_clip.tokenizer, "a (red:1.5) cat", no_embeddings)
    red, cat = text_ids(sd_clip.tokenizer, "red"), text_ids(sd_clip.tokenizer, "cat")
    ids = text_ids(sd_clip.tokenizer, "a") + red + cat
    assert tokens.input_ids.tolist() == [window(ids)]
    assert tokens.weights[0, :4].tolist() == [1.0, 1.0, 1.5, 1.0] and tokens.embedding_vectors is None


def test_a_short_weighted_group_moves_whole_to_the_next_window(sd_clip):
    cat, dog = text_ids(sd_clip.tokenizer, "cat")[0], text_ids(sd_clip.tokenizer, "dog")[0]
    tokens = tokenize_weighted(sd_clip.tokenizer, "cat " * 70 + "(dog dog dog dog dog dog:1.2)", no_embeddings)
    assert tokens.input_ids.tolist() == [window([cat] * 70), window([dog] * 6)]
    assert tokens.weights[1, 1:7].tolist() == pytest.approx([1.2] * 6)


def test_a_group_of_eight_or_more_tokens_is_split(sd_clip):
    cat, dog = text_ids(sd_clip.tokenizer, "cat")[0], text_ids(sd_clip.tokenizer, "dog")[0]
    tokens = tokenize_weighted(sd_clip.tokenizer, "cat " * 70 + "(" + "dog " * 10 + ":1.2)", no_embeddings)
    assert tokens.input_ids.tolist() == [window([cat] * 70 + [dog] * 5), window([dog] * 5)]


def test_embedding_names_become_their_vectors_with_the_leftover_text(sd_clip):
    vectors = torch.randn(2, 32)
    found = {"style": vectors}
    tokens = tokenize_weighted(sd_clip.tokenizer, "a embedding:style, (dog:1.3) (embedding:style:0.8)", found.get)
    comma, dog = text_ids(sd_clip.tokenizer, ",")[0], text_ids(sd_clip.tokenizer, "dog")[0]
    a = text_ids(sd_clip.tokenizer, "a")[0]
    # "style," is not an embedding, "style" is: the comma is tokenized after the vectors; the second use reuses rows
    assert tokens.input_ids[0, :8].tolist() == [BOS, a, -1, -2, comma, dog, -1, -2]
    assert tokens.weights[0, 4:8].tolist() == pytest.approx([1.0, 1.3, 0.8, 0.8])  # vectors take their piece's weight
    assert torch.equal(tokens.embedding_vectors, vectors)
    with pytest.raises(MissingEmbedding, match="nothere"):
        tokenize_weighted(sd_clip.tokenizer, "embedding:nothere cat", found.get)
    # "embedding:" must start a word: inside a word it is text
    plain = tokenize_weighted(sd_clip.tokenizer, "xembedding:style", found.get)
    assert plain.embedding_vectors is None


def test_weights_pull_tokens_away_from_the_empty_prompt(sd_clip):
    tokens = tokenize_weighted(sd_clip.tokenizer, "a (red:1.5) cat", no_embeddings)
    got = encode_weighted(sd_clip.tokenizer, sd_clip.text_encoder, tokens)
    z = encode_tokens(sd_clip.text_encoder, tokens.input_ids)
    empty = encode_tokens(sd_clip.text_encoder, torch.tensor([window([])]))
    expected = z.clone()
    expected[0, 2] = empty[0, 2] + (z[0, 2] - empty[0, 2]) * 1.5
    assert got.shape == (1, 77, 32)
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.allclose(got[0, 3:], z[0, 3:], atol=1e-6) and not torch.allclose(got[0, 2], z[0, 2], atol=1e-3)


def test_an_unweighted_prompt_encodes_as_graphflows_plain_prompt(sd_clip):
    from nodes.conditioning import prompt_conditioning, prompt_tokens

    comfy = encode_weighted(sd_clip.tokenizer, sd_clip.text_encoder,
                            tokenize_weighted(sd_clip.tokenizer, "a photo of a cat", no_embeddings))
    plain = prompt_conditioning(sd_clip, prompt_tokens(sd_clip, "a photo of a cat")).embeds
    assert torch.equal(comfy, plain)


def test_long_prompts_encode_window_by_window(sd_clip):
    tokens = tokenize_weighted(sd_clip.tokenizer, "cat " * 100, no_embeddings)
    got = encode_weighted(sd_clip.tokenizer, sd_clip.text_encoder, tokens)
    assert tokens.input_ids.shape == (2, 77) and got.shape == (1, 154, 32)
    second = encode_tokens(sd_clip.text_encoder, tokens.input_ids[1:])
    assert torch.allclose(got[0, 77:], second[0], atol=1e-6)
