"""File-name safety and atomic, never-overwriting writes — shared by node packs and the server.

Names in a workflow or a URL may come from the network, so resolving them is a security boundary:
a name can only ever point inside its root folder."""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import BinaryIO, Callable

Writer = Callable[[BinaryIO], None]


class UnsafePath(ValueError):
    """A name that would leave its folder (or is no name at all). ``reason`` says which rule it broke."""

    def __init__(self, name: object, reason: str, via_symlink: bool = False):
        self.name, self.reason, self.via_symlink = name, reason, via_symlink
        super().__init__(f"{name!r} {reason}")


def resolve_inside(root: Path, name: str) -> Path:
    """The absolute path of relative ``name`` inside ``root``; the file need not exist.

    Refused with :class:`UnsafePath`: empty names, NUL bytes, absolute paths (POSIX or Windows, drive letters
    included), any ``..`` component (``/`` or ``\\`` separated), and names that resolve outside ``root``
    through a symlink."""
    if not isinstance(name, str) or not name.strip() or "\x00" in name:
        raise UnsafePath(name, "is not a file name")
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() or PureWindowsPath(name).drive:
        raise UnsafePath(name, "must be relative to its folder, not an absolute path")
    if ".." in re.split(r"[\\/]", name):
        raise UnsafePath(name, "must not climb out of its folder with '..'")
    base = Path(root).resolve()
    target = (base / name).resolve()
    if not target.is_relative_to(base):
        raise UnsafePath(name, "leads outside its folder through a symlink", via_symlink=True)
    return target


def atomic_write(path: Path, writer: Writer) -> Path:
    """Write a new file at ``path`` through ``writer(binary_file)``; raise FileExistsError if it exists.

    The bytes go to a hidden temporary file in the same folder, then the file is hard-linked to its name,
    which is atomic and exclusive: readers never see half a file and nobody's file is replaced. Where hard
    links are unavailable the name is reserved with an exclusive create and the finished file renamed onto it."""
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
        except OSError:  # no hard links here (FAT, some network shares)
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return path


def hide_folders(value: object, folders: dict[str, Path]) -> object:
    """``value`` (a string, or JSON-like lists and dicts of them) with each folder's path replaced by its label.

    The server uses it on error messages, which name the folder a missing file was looked for in: useful on the
    command line, but the server's own layout is none of a remote client's business."""
    # Absolute forms only: a relative folder like "models" would also match the plain word.
    forms = {(str(form), label) for label, folder in folders.items()
             for form in (Path(folder), Path(folder).resolve()) if form.is_absolute()}
    pairs = sorted(forms, key=lambda pair: -len(pair[0]))
    return _replace_strings(value, pairs)


def _replace_strings(value: object, pairs: list[tuple[str, str]]) -> object:
    if isinstance(value, str):
        for path, label in pairs:
            value = value.replace(path, label)
        return value
    if isinstance(value, list):
        return [_replace_strings(item, pairs) for item in value]
    if isinstance(value, dict):
        return {key: _replace_strings(item, pairs) for key, item in value.items()}
    return value
