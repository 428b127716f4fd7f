"""Where nodes look for a named file: the user's folder first, then the read-only asset folders.

``Settings.asset_dirs`` holds folders of shipped example files (the CLI adds the ``assets/`` folder next to
the workflow it runs), so ``graphflow run workflows/lora.json`` finds ``workflows/assets/loras/*.safetensors``
without copying anything into the models folder. A file in the user's folder wins over an asset of the
same name. Names never leave the folder they are looked up in (:func:`nodes.files.resolve_inside`).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, Iterable

from graphflow.errors import NodeInputError
from graphflow.node import FileProblem

from .files import resolve_inside
from .model_folders import kind_folders


class MissingFile(NodeInputError):
    """A name that is safe but found in none of the folders: what validation's preflight reports as missing."""


def search_folders(settings, subdir: str, first: Path | None = None) -> list[Path]:
    """The folders to look in, in order: ``first`` (default: the model kind ``subdir``'s folders under the models
    directory, in every layout :func:`nodes.model_folders.kind_folders` knows), then ``<asset_dir>/<subdir>`` for
    every asset folder. ``subdir`` may be "" (files directly in the folders)."""
    own = kind_folders(settings.models_dir, subdir) if first is None else [Path(first)]
    return own + [Path(asset) / subdir for asset in getattr(settings, "asset_dirs", ())]


def find_file(folders: Iterable[Path], candidates: Iterable[str], input_name: str) -> Path | None:
    """The first existing file among ``candidates`` (relative names, in order of preference) in the first
    folder that holds one; None if no folder does. A candidate that would leave its folder (``..``, an
    absolute path, a symlink pointing out) raises a NodeInputError on ``input_name``."""
    candidates = list(candidates)
    for folder in folders:
        for candidate in candidates:
            path = resolve_inside(folder, candidate, input_name)
            if path.is_file():
                return path
    return None


def files_in(folders: Iterable[Path], suffixes: tuple[str, ...]) -> list[str]:
    """Files ending in one of ``suffixes`` in the folders (sub-folders included), as names relative to their
    folder, sorted: what a loader of single-file models lists."""
    names: set[str] = set()
    for folder in map(Path, folders):
        if folder.is_dir():
            files = (p for p in folder.rglob("*") if p.suffix.lower() in suffixes and p.is_file())
            names.update(p.relative_to(folder).as_posix() for p in files)
    return sorted(names)


def model_file(name: str, folders: list[Path], suffixes: tuple[str, ...], what: str) -> Path:
    """The file ``name`` refers to in the first folder holding it, or a NodeInputError on the input ``name``:
    MissingFile listing the files that exist, or a file that does not end in one of ``suffixes``. ``what``
    names the kind in messages ("upscale model")."""
    path = find_file(folders, [name], "name")
    if path is None:
        available = files_in(folders, suffixes)
        listing = ", ".join(available) if available else f"none — put {'/'.join(suffixes)} files in {folders[0]}"
        raise MissingFile("name", f"no {what} named {name!r}", f"one of: {listing}", name)
    if path.suffix.lower() not in suffixes:
        raise NodeInputError("name", f"has a suffix no {what} file has", f"a file ending in {', '.join(suffixes)}", name)
    return path


def file_fingerprint(path: Path | None) -> str:
    """Identity of a resolved file (where it is, its size and modification time) for a node's cache key:
    editing the file, or a new file shadowing it from an earlier folder, changes it."""
    if path is None:
        return "missing"
    stat = path.stat()
    return hashlib.sha256(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()


def preflight_check(resolve: Callable[[], Any], available: Callable[[], Iterable[str]]) -> list[FileProblem]:
    """Run a node's own name resolution (``resolve``, which raises NodeInputError) without loading anything,
    and turn a failure into the FileProblem validation reports; ``available`` lists the names that would work."""
    try:
        resolve()
    except MissingFile as exc:
        return [FileProblem(exc.input, exc.message, exc.received, tuple(available()))]
    except NodeInputError as exc:
        return [FileProblem(exc.input, exc.message, exc.received, expected=exc.expected)]
    return []
