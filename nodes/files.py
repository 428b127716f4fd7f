"""Safe file names for nodes that read from or write into the user's folders.

Two rules hold for every node that touches the file system:

- a name taken from a workflow (``name``, ``filename_prefix``, ...) can only ever point inside its folder:
  ``..``, absolute paths and symlinks leading out are refused with a :class:`NodeInputError`
  (workflows arrive over the network, so this is a security boundary, not a convenience);
- an output file is never overwritten and never seen half-written: it is written to a hidden temporary file
  in the same folder, then hard-linked to its final name, which fails instead of replacing a file that
  appeared in the meantime.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

from graphflow import paths
from graphflow.errors import NodeInputError
from graphflow.paths import Writer, atomic_write  # noqa: F401  (re-exported for node modules)

COUNTER_DIGITS = 5


def resolve_inside(root: Path, name: str, input_name: str) -> Path:
    """The absolute path of ``name`` inside ``root``, or a NodeInputError on ``input_name``.

    ``name`` may contain sub-folders ("portraits/face.png"); the rules are :func:`graphflow.paths.resolve_inside`'s."""
    try:
        return paths.resolve_inside(root, name)
    except paths.UnsafePath as exc:
        raise NodeInputError(input_name, exc.reason, f"a relative path inside {root}", name) from None


def unique_output_path(directory: Path, prefix: str, ext: str) -> Path:
    """The next free ``<prefix>_<NNNNN>.<ext>`` in ``directory`` (sub-folders of the prefix are created).

    The counter continues after the highest one already used by that prefix, whatever the extension,
    so a PNG and a GIF saved with one prefix do not share a number. The name is free *now*; use
    :func:`atomic_write` (or :func:`write_new_output`) to claim it without ever replacing a file."""
    target = resolve_inside(directory, prefix, "filename_prefix")
    if prefix.endswith(("/", "\\")) or target == Path(directory).resolve():
        raise NodeInputError("filename_prefix", "must end with a file name, not a folder", "e.g. 'renders/portrait'", prefix)
    target.parent.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(rf"{re.escape(target.name)}_(\d{{{COUNTER_DIGITS},}})\.[^.]+")
    used = [int(m.group(1)) for entry in os.listdir(target.parent) if (m := pattern.fullmatch(entry))]
    counter = max(used, default=0) + 1
    return target.parent / f"{target.name}_{counter:0{COUNTER_DIGITS}d}.{ext.lstrip('.')}"


def write_new_output(directory: Path, prefix: str, ext: str, writer: Writer, attempts: int = 100) -> Path:
    """Write a new numbered output file through ``writer(binary_file)`` (:func:`new_output` + :func:`atomic_write`)."""
    return new_output(directory, prefix, ext, lambda path: atomic_write(path, writer), attempts)


def new_output(directory: Path, prefix: str, ext: str, create: Callable[[Path], Path], attempts: int = 100) -> Path:
    """Make a new numbered output file with ``create(path)`` and return its path. ``create`` writes atomically and
    refuses an existing file with FileExistsError (as :func:`atomic_write` and :func:`graphflow.paths.atomic_save`
    do): if another writer claims the chosen number first, the next free number is taken instead."""
    for _ in range(attempts):
        path = unique_output_path(directory, prefix, ext)
        try:
            return create(path)
        except FileExistsError:
            continue
    raise FileExistsError(f"could not find a free output name for prefix {prefix!r} in {directory} after {attempts} attempts")


def relative_name(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` with forward slashes: how outputs are named in run reports."""
    return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
