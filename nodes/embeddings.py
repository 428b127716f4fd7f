"""Textual inversion: embedding files from ``<models_dir>/embeddings`` attached to a CLIP value.

Files are looked up in ``<models_dir>/embeddings`` first, then in ``embeddings/`` of each read-only asset
folder (``Settings.asset_dirs``, see ``nodes/search.py``); the first folder holding a name wins.

An embedding is a few learned input vectors (n, C) for the text encoder. Its name is the file name
without extension; a prompt uses it by that name (``easynegative``) or as ``embedding:easynegative``
(see ``nodes/prompt.py``, which puts the vectors in place of the name when tokenizing).

Formats read:
- A1111 / original textual-inversion ``.pt``: ``{"string_to_param": {"*": tensor(n, C)}, ...}``;
- diffusers ``.bin`` / ``.pt``: ``{"<token>": tensor(C)}``;
- ``.safetensors``: a single tensor, or ``emb_params`` (A1111's safetensors export), or SDXL's ``clip_l`` and
  ``clip_g`` (one set of vectors per text encoder, kept side by side: (n, 768 + 1280) for an SDXL base CLIP).
Pickled files are opened with ``torch.load(weights_only=True)`` only: a file that needs arbitrary
classes to unpickle is refused, never executed.
"""
from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import torch
from pydantic import Field

from graphflow.context import RunContext
from graphflow.errors import NodeInputError
from graphflow.node import Input, node

from .files import resolve_inside
from .search import MissingFile, file_fingerprint, preflight_check, search_folders
from .values import CLIP, Clip

EMBEDDINGS_SUBDIR = "embeddings"
SUFFIXES = (".safetensors", ".pt", ".bin")  # in order of preference when two files share a name


def embedding_folders(settings) -> list[Path]:
    """``<models_dir>/embeddings``, then ``embeddings/`` in every asset folder (see nodes/search.py)."""
    return search_folders(settings, EMBEDDINGS_SUBDIR)


def list_embeddings(directory: Path) -> dict[str, Path]:
    """Embedding name → file, for every embedding file directly in ``directory`` (sorted by name)."""
    found: dict[str, Path] = {}
    if not directory.is_dir():
        return found
    files = [p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES]
    for path in sorted(files, key=lambda p: (p.stem, SUFFIXES.index(p.suffix.lower()))):
        found.setdefault(path.stem, path)
    return found


def available_embeddings(folders: list[Path]) -> list[str]:
    """Every embedding name in the folders, sorted."""
    return sorted({name for folder in folders for name in list_embeddings(folder)})


def find_embedding(folders: list[Path], name: str) -> Path | None:
    """The file for an embedding name, from the first folder that lists it (.safetensors preferred).

    Only files directly in a folder have names, so a name cannot climb out; a symlink leading out of
    the folder is refused (NodeInputError on ``names``)."""
    for folder in folders:
        path = list_embeddings(folder).get(name)
        if path is not None:
            return resolve_inside(folder, path.name, "names")
    return None


def load_embedding(path: Path) -> torch.Tensor:
    """The vectors (n, C) of one embedding file, as float32 on the CPU."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        tensors = load_file(str(path), device="cpu")
        vectors = tensors.get("emb_params")
        if {"clip_l", "clip_g"} <= set(tensors):  # SDXL: one set of vectors per text encoder, kept side by side
            if tensors["clip_l"].shape[:-1] != tensors["clip_g"].shape[:-1]:
                raise ValueError(f"{path.name}: clip_l and clip_g hold different numbers of vectors")
            vectors = torch.cat([tensors["clip_l"], tensors["clip_g"]], dim=-1)
        elif vectors is None:
            vectors = _only_tensor(tensors, path)
    else:
        from .checkpoints.reading import load_pickled_weights

        data = load_pickled_weights(path)  # one line of ours for unsafe or corrupt pickles (a ValueError)
        vectors = _vectors_from_pickle(data, path)
    if vectors.ndim == 1:
        vectors = vectors.unsqueeze(0)
    if vectors.ndim != 2 or vectors.shape[0] == 0:
        raise ValueError(f"{path.name}: expected vectors shaped (n, width), found {tuple(vectors.shape)}")
    return vectors.detach().to(torch.float32).contiguous()


def _vectors_from_pickle(data, path: Path) -> torch.Tensor:
    if isinstance(data, torch.Tensor):
        return data
    if not isinstance(data, dict):
        raise ValueError(f"{path.name}: not an embedding file (found a {type(data).__name__})")
    if "string_to_param" in data:
        return _only_tensor(data["string_to_param"], path)
    if "emb_params" in data:
        return data["emb_params"]
    return _only_tensor(data, path)


def _only_tensor(tensors, path: Path) -> torch.Tensor:
    values = [v for v in tensors.values() if isinstance(v, torch.Tensor)] if isinstance(tensors, dict) else []
    if len(values) != 1:
        keys = list(tensors) if isinstance(tensors, dict) else type(tensors).__name__
        raise ValueError(f"{path.name}: expected exactly one tensor (or 'emb_params'/'string_to_param'), found {keys}")
    return values[0]


def text_width(clip: Clip) -> int:
    """The width of the CLIP's input vectors; SDXL's two encoders side by side (768 + 1280 at full size)."""
    encoders = [clip.text_encoder] + ([clip.text_encoder_2] if clip.text_encoder_2 is not None else [])
    return sum(int(encoder.get_input_embeddings().embedding_dim) for encoder in encoders)


def with_embeddings(clip: Clip, embeddings: dict[str, torch.Tensor], input_name: str = "names") -> Clip:
    """A new CLIP value whose ``embeddings`` also hold these (shape-checked against the text encoder)."""
    width = text_width(clip)
    for name, vectors in embeddings.items():
        if vectors.shape[-1] != width:
            raise NodeInputError(input_name, f"embedding {name!r} was trained for a text encoder of width "
                                 f"{vectors.shape[-1]}, this CLIP ({clip.name}) has width {width}",
                                 f"(n, {width})", tuple(vectors.shape))
    return replace(clip, embeddings={**clip.embeddings, **embeddings})


def _requested(names: str) -> list[str]:
    return [n.strip() for n in names.split(",") if n.strip()]


def _lookup(names: str, folders: list[Path]) -> dict[str, Path | None]:
    """Name → file (None when missing) for the requested names (all available ones when ``names`` is empty)."""
    return {name: find_embedding(folders, name) for name in _requested(names) or available_embeddings(folders)}


def _missing(name: str, folders: list[Path]) -> MissingFile:
    where = ", ".join(str(f) for f in folders)
    return MissingFile("names", f"no embedding file named {name!r} (looked in {where})",
                       available_embeddings(folders) or f"a .safetensors/.pt/.bin file in {folders[0]}", name)


def _resolve(names: str, folders: list[Path]) -> dict[str, Path]:
    """Name → file for the requested names; the first missing one is an error."""
    found = _lookup(names, folders)
    for name, path in found.items():
        if path is None:
            raise _missing(name, folders)
    return found


def _preflight(literals: dict, settings) -> list:
    """One problem per missing name, so a workflow naming several wrong embeddings hears of all of them."""
    folders = embedding_folders(settings)
    problems = []
    for name in _requested(literals.get("names", "")):
        problems += preflight_check(lambda: _resolve(name, folders), lambda: available_embeddings(folders))
    return problems


def _fingerprint(literals: dict, settings) -> str:
    """The identity of every file the node would load: changes when one is rewritten, shadowed or added."""
    files = _resolve(literals.get("names", ""), embedding_folders(settings))
    return hashlib.sha256("\n".join(f"{n}|{file_fingerprint(p)}" for n, p in files.items()).encode()).hexdigest()


@node(outputs={"clip": CLIP}, category="loaders", fingerprint=_fingerprint, pool="model", preflight=_preflight)
def LoadEmbeddings(
    clip: Clip = Input(CLIP),
    names: str = Field("", description="comma-separated embedding names (file names without extension) from "
                       "<models_dir>/embeddings or an asset folder's embeddings/; empty loads every one found"),
    *,
    ctx: RunContext,
) -> Clip:
    """Attach textual-inversion embeddings to a CLIP so prompts can use them by name.

    The text encoder is not changed: the vectors travel with the CLIP value and the tokenizer puts them
    in where a prompt says ``name`` or ``embedding:name``."""
    loaded = {}
    for name, path in _resolve(names, embedding_folders(ctx.settings)).items():
        try:
            loaded[name] = load_embedding(path)
        except ValueError as exc:
            raise NodeInputError("names", str(exc), "a textual-inversion embedding file", path.name) from exc
    return with_embeddings(clip, loaded)
