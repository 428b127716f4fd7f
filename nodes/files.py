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
import tempfile
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import BinaryIO, Callable

from graphflow.errors import NodeInputError

Writer = Callable[[BinaryIO], None]
COUNTER_DIGITS = 5


def resolve_inside(root: Path, name: str, input_name: str) -> Path:
    """The absolute path of ``name`` inside ``root``, or a NodeInputError on ``input_name``.

    ``name`` may contain sub-folders ("portraits/face.png"). Refused: empty names, absolute paths
    (POSIX or Windows, drive letters included), any ``..`` component, and names that resolve outside
    ``root`` through a symlink. The file itself need not exist."""
    expected = f"a relative path inside {root}"
    if not isinstance(name, str) or not name.strip() or "\x00" in name:
        raise NodeInputError(input_name, "needs a file name", expected, repr(name))
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() or PureWindowsPath(name).drive:
        raise NodeInputError(input_name, "must be relative to its folder, not an absolute path", expected, name)
    if ".." in re.split(r"[\\/]", name):
        raise NodeInputError(input_name, "must not climb out of its folder with '..'", expected, name)
    base = Path(root).resolve()
    target = (base / name).resolve()
    if not target.is_relative_to(base):
        raise NodeInputError(input_name, "leads outside its folder through a symlink", expected, name)
    return target


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


def atomic_write(path: Path, writer: Writer) -> Path:
    """Write a new file at ``path`` through ``writer(binary_file)``; raise FileExistsError if it exists.

    The bytes go to a hidden temporary file in the same folder (so the final step is a same-file-system
    operation); then the file is linked to its name, which is atomic and exclusive. On file systems
    without hard links the name is reserved with an exclusive create and the finished file renamed onto
    that reservation — still never replacing anyone else's file."""
    path = Path(path)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as file:
            writer(file)
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temp, path)
        except FileExistsError:
            raise
        except OSError:  # no hard links here (FAT, some network shares): reserve the name, then rename onto it
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return path


def write_new_output(directory: Path, prefix: str, ext: str, writer: Writer, attempts: int = 100) -> Path:
    """Write a new numbered output file (:func:`unique_output_path` + :func:`atomic_write`) and return its path.

    If another writer claims the chosen number first, the next free number is taken instead."""
    for _ in range(attempts):
        path = unique_output_path(directory, prefix, ext)
        try:
            return atomic_write(path, writer)
        except FileExistsError:
            continue
    raise FileExistsError(f"could not find a free output name for prefix {prefix!r} in {directory} after {attempts} attempts")


def relative_name(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` with forward slashes: how outputs are named in run reports."""
    return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
