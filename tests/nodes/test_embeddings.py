"""nodes.embeddings: textual-inversion files in A1111 .pt, diffusers .bin and .safetensors formats, and the
LoadEmbeddings node that attaches them to a CLIP value without touching the text encoder."""
from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file

from graphflow.errors import NodeInputError
from graphflow.node import spec_of
from nodes.builtin_models import build_tiny_components
from nodes.embeddings import LoadEmbeddings, list_embeddings, load_embedding
from nodes.prompt import encode_tokens, tokenize_prompt
from nodes.tiny_assets import ensure_assets, save_embedding
from nodes.values import Clip, digest_of

from .runctx import make_ctx, run_node


@pytest.fixture(scope="module")
def clip():
    parts = build_tiny_components()
    return Clip(parts["tokenizer"], parts["text_encoder"], "sd1", "tiny-sd")


@pytest.fixture
def ctx(tmp_path):
    return make_ctx(tmp_path)[0]


@pytest.fixture
def emb_dir(ctx):
    directory = ctx.settings.models_dir / "embeddings"
    directory.mkdir(parents=True)
    return directory


class NotAllowed:
    """Unpickling this needs arbitrary code: weights_only loading must refuse it."""


def test_a1111_pt_format(tmp_path):
    vectors = torch.randn(2, 32)
    path = save_embedding(vectors, tmp_path / "neg.pt")
    assert torch.equal(load_embedding(path), vectors)


def test_safetensors_formats(tmp_path):
    vectors = torch.randn(3, 32)
    save_embedding(vectors, tmp_path / "a.safetensors")  # emb_params
    save_file({"whatever": vectors[0].contiguous()}, str(tmp_path / "b.safetensors"))  # one key, one vector
    assert torch.equal(load_embedding(tmp_path / "a.safetensors"), vectors)
    assert load_embedding(tmp_path / "b.safetensors").shape == (1, 32)
    clip_g = torch.randn(3, 64)
    save_file({"clip_l": vectors, "clip_g": clip_g}, str(tmp_path / "sdxl.safetensors"))  # SDXL: side by side
    assert torch.equal(load_embedding(tmp_path / "sdxl.safetensors"), torch.cat([vectors, clip_g], dim=-1))
    save_file({"clip_l": vectors, "clip_g": clip_g[:2]}, str(tmp_path / "uneven.safetensors"))
    with pytest.raises(ValueError, match="different numbers of vectors"):
        load_embedding(tmp_path / "uneven.safetensors")
    save_file({"one": vectors, "two": clip_g}, str(tmp_path / "two.safetensors"))
    with pytest.raises(ValueError, match="exactly one tensor"):
        load_embedding(tmp_path / "two.safetensors")


def test_diffusers_bin_format(tmp_path):
    vectors = torch.randn(32)
    torch.save({"<cat-toy>": vectors}, tmp_path / "learned_embeds.bin")
    assert torch.equal(load_embedding(tmp_path / "learned_embeds.bin"), vectors.unsqueeze(0))


def test_unsafe_pickle_is_refused(tmp_path):
    torch.save({"string_to_param": {"*": torch.randn(1, 32)}, "extra": NotAllowed()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="evil.pt contains pickled Python objects besides tensors .*NotAllowed"):
        load_embedding(tmp_path / "evil.pt")


@pytest.mark.parametrize("content, words", [
    ("unsafe", "contains pickled Python objects besides tensors"),
    (b"not a pickle at all", "neither a safetensors file nor a PyTorch checkpoint"),
    (b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01", "neither a safetensors file nor a PyTorch checkpoint"),
])
def test_an_unreadable_pickle_is_one_line_of_ours_without_torchs_colours_or_advice(tmp_path, content, words):
    path = tmp_path / "bad.pt"
    if content == "unsafe":
        torch.save({"emb_params": torch.randn(1, 32), "extra": NotAllowed()}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError) as refused:
        load_embedding(path)
    message = str(refused.value)
    assert message.startswith("bad.pt ") and words in message
    assert "\x1b" not in message and "\n" not in message
    for advice in ("weights_only` set to `False`", "file an issue", "https://", "add_safe_globals"):
        assert advice not in message


def test_listing_prefers_safetensors(tmp_path):
    save_embedding(torch.randn(1, 32), tmp_path / "x.pt")
    save_embedding(torch.randn(1, 32), tmp_path / "x.safetensors")
    save_embedding(torch.randn(1, 32), tmp_path / "y.pt")
    (tmp_path / "notes.txt").write_text("not an embedding")
    assert {n: p.name for n, p in list_embeddings(tmp_path).items()} == {"x": "x.safetensors", "y": "y.pt"}


def test_load_embeddings_node_adds_to_a_new_clip(clip, ctx, emb_dir):
    paths = ensure_assets(ctx.settings.models_dir)
    before = digest_of(clip)
    loaded = run_node(LoadEmbeddings, ctx, clip=clip, names="")  # empty: every file in the folder
    assert set(loaded.embeddings) == {"tinyneg", "tinystyle"}
    assert loaded.embeddings["tinyneg"].shape == (2, 32) and loaded.embeddings["tinystyle"].shape == (3, 32)
    assert torch.equal(loaded.embeddings["tinyneg"], load_embedding(paths["tinyneg"]))
    assert loaded is not clip and clip.embeddings == {}
    assert loaded.text_encoder is clip.text_encoder  # weights are shared, not copied
    assert digest_of(clip) == before
    only = run_node(LoadEmbeddings, ctx, clip=clip, names=" tinystyle ")
    assert set(only.embeddings) == {"tinystyle"}
    both = run_node(LoadEmbeddings, ctx, clip=only, names="tinyneg")  # chained loads accumulate
    assert set(both.embeddings) == {"tinyneg", "tinystyle"}


def test_loaded_embedding_changes_the_encoding(clip, ctx, emb_dir):
    ensure_assets(ctx.settings.models_dir)
    loaded = run_node(LoadEmbeddings, ctx, clip=clip, names="tinyneg")
    with_emb = tokenize_prompt(loaded.tokenizer, "a cat, tinyneg", embeddings=loaded.embeddings)
    without = tokenize_prompt(clip.tokenizer, "a cat, tinyneg")
    a = encode_tokens(loaded.text_encoder, with_emb.input_ids, with_emb.weights,
                      embedding_vectors=with_emb.embedding_vectors)
    b = encode_tokens(clip.text_encoder, without.input_ids, without.weights)
    assert with_emb.input_ids[0].lt(0).sum() == 2
    assert not torch.allclose(a, b)


def test_unknown_name_lists_what_is_there(clip, ctx, emb_dir):
    save_embedding(torch.randn(1, 32), emb_dir / "present.pt")
    with pytest.raises(NodeInputError) as error:
        run_node(LoadEmbeddings, ctx, clip=clip, names="present, absent")
    assert error.value.input == "names" and "absent" in error.value.message
    assert error.value.expected == ["present"]


def test_wrong_width_is_a_clear_error(clip, ctx, emb_dir):
    save_embedding(torch.randn(2, 768), emb_dir / "sd15only.safetensors")
    with pytest.raises(NodeInputError) as error:
        run_node(LoadEmbeddings, ctx, clip=clip, names="sd15only")
    assert "768" in error.value.message and "32" in error.value.message


def test_unreadable_file_names_the_input(clip, ctx, emb_dir):
    torch.save({"string_to_param": {"*": torch.randn(1, 32)}, "extra": NotAllowed()}, emb_dir / "evil.pt")
    with pytest.raises(NodeInputError) as error:
        run_node(LoadEmbeddings, ctx, clip=clip, names="evil")
    assert error.value.input == "names"


def test_asset_folders_are_searched_after_the_models_folder(clip, ctx, emb_dir, tmp_path):
    first, second = tmp_path / "assets1", tmp_path / "assets2"
    ctx.settings = replace(ctx.settings, asset_dirs=(first, second))
    vectors = {key: torch.randn(1, 32) for key in ("first", "second", "user", "other")}
    save_embedding(vectors["first"], first / "embeddings" / "shiny.pt")
    save_embedding(vectors["second"], second / "embeddings" / "shiny.safetensors")
    save_embedding(vectors["other"], second / "embeddings" / "dull.safetensors")
    fingerprint = spec_of(LoadEmbeddings).fingerprint
    from_asset = fingerprint({"names": "shiny"}, ctx.settings)
    loaded = run_node(LoadEmbeddings, ctx, clip=clip, names="shiny, dull")
    assert torch.equal(loaded.embeddings["shiny"], vectors["first"]), "the first folder holding the name wins"
    assert torch.equal(loaded.embeddings["dull"], vectors["other"])
    assert set(run_node(LoadEmbeddings, ctx, clip=clip, names="").embeddings) == {"shiny", "dull"}, "empty: every name in every folder"
    save_embedding(vectors["user"], emb_dir / "shiny.pt")
    assert torch.equal(run_node(LoadEmbeddings, ctx, clip=clip, names="shiny").embeddings["shiny"], vectors["user"]), "the models folder first"
    assert fingerprint({"names": "shiny"}, ctx.settings) != from_asset, "a shadowing file changes the cache key"
    with pytest.raises(NodeInputError) as error:
        run_node(LoadEmbeddings, ctx, clip=clip, names="absent")
    assert error.value.expected == ["dull", "shiny"] and str(second / "embeddings") in error.value.message


def test_fingerprint_covers_the_files_it_loads(ctx, emb_dir):
    fingerprint = spec_of(LoadEmbeddings).fingerprint
    save_embedding(torch.randn(1, 32), emb_dir / "a.pt")
    save_embedding(torch.randn(1, 32), emb_dir / "b.pt")
    only_a, everything = fingerprint({"names": "a"}, ctx.settings), fingerprint({"names": ""}, ctx.settings)
    save_embedding(torch.randn(2, 32), emb_dir / "b.pt")  # rewritten: b only
    assert fingerprint({"names": "a"}, ctx.settings) == only_a
    assert fingerprint({"names": ""}, ctx.settings) != everything
    save_embedding(torch.randn(1, 32), emb_dir / "c.pt")  # a new file joins "every embedding"
    assert fingerprint({"names": ""}, ctx.settings) not in (everything, only_a)
    with pytest.raises(NodeInputError) as error:  # the run stops before any node runs, as the node itself would
        fingerprint({"names": "missing"}, ctx.settings)
    assert error.value.input == "names"


def test_symlink_leading_out_is_refused(clip, ctx, emb_dir, tmp_path):
    secret = save_embedding(torch.randn(1, 32), tmp_path / "elsewhere" / "secret.pt")
    (emb_dir / "secret.pt").symlink_to(secret)
    with pytest.raises(NodeInputError) as error:
        run_node(LoadEmbeddings, ctx, clip=clip, names="secret")
    assert error.value.input == "names"
