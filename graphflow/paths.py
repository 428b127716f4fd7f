"""File-name safety and atomic writes — the one implementation of each, shared by node packs and the server.

Names in a workflow or a URL may come from the network, so resolving them is a security boundary:
a name can only ever point inside its root folder."""
from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import stat
import tempfile
import time
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import BinaryIO, Callable

from .errors import GraphflowError

Writer = Callable[[BinaryIO], None]  # writes a file's bytes into the open file it is given
PathWriter = Callable[[Path], None]  # writes a complete file (or folder) at the path it is given
# What atomic writes put beside NAME while writing it (see _placeholder): ".NAME." + 8 random characters + ".tmp".
_OUR_TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


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


def atomic_write(path: Path, writer: Writer, *, replace: bool = False) -> Path:
    """Write the file ``path`` through ``writer(binary_file)``, as :func:`atomic_save` does."""
    def fill(temporary: Path) -> None:
        with open(temporary, "wb") as file:  # the placeholder atomic_save made: its mode is kept
            writer(file)

    return atomic_save(path, fill, replace=replace)


def atomic_save(path: Path, save: PathWriter, *, replace: bool = False) -> Path:
    """Write the file ``path`` through ``save(temporary_path)`` — for libraries that only write to a path
    (safetensors, torch.save) — so that nobody ever sees half a file.

    The bytes go to a hidden temporary file in the same folder, flushed to disk, then published under the name.
    By default publishing is a hard link, atomic and exclusive: FileExistsError if ``path`` exists, nobody's file
    is replaced (where hard links are unavailable the name is reserved with an exclusive create and the finished
    file renamed onto it). ``replace=True`` renames it over an existing file instead (for files that are
    rebuilt, never for outputs). The file gets the mode any new file gets (0644 under the usual umask 022),
    even when ``save`` recreates it (``tempfile`` and some libraries would leave it 0600)."""
    path = Path(path)
    temporary, mode = _placeholder(path, folder=False)
    try:
        save(temporary)
        if os.stat(temporary).st_mode & 0o7777 != mode:
            os.chmod(temporary, mode)
        descriptor = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        if replace:
            os.replace(temporary, path)
        else:
            _publish_exclusively(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def atomic_folder(path: Path, fill: PathWriter) -> Path:
    """Create the folder ``path`` through ``fill(temporary_folder)``: filled under a hidden name beside it, then
    renamed into place, so a half-filled folder is never seen under its name. FileExistsError (and nothing
    left behind) if ``path`` exists by then. The folder and everything in it get the modes any new folder and file
    get (0755 and 0644 under umask 022), whatever ``fill`` used (safetensors writes 0600 files)."""
    path = Path(path)
    temporary, folder_mode = _placeholder(path, folder=True)
    try:
        fill(temporary)
        _normalise_modes(temporary, folder_mode)
        if path.exists():
            raise FileExistsError(errno.EEXIST, "folder exists", str(path))
        try:
            os.rename(temporary, path)
        except OSError as error:
            if error.errno in (errno.EEXIST, errno.ENOTEMPTY):  # another writer finished first
                raise FileExistsError(errno.EEXIST, "folder exists", str(path)) from None
            raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return path


def _placeholder(path: Path, folder: bool) -> tuple[Path, int]:
    """A new hidden ``.<name>.<random>.tmp`` beside ``path`` and its permission bits. Created with mode 0666 (0777
    for a folder) so the kernel applies the umask — unlike ``tempfile``, whose files are always 0600."""
    for _ in range(100):
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            if folder:
                os.mkdir(temporary, 0o777)
            else:
                os.close(os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        return temporary, os.stat(temporary).st_mode & 0o7777
    raise FileExistsError(f"no free temporary name beside {path}")


def _normalise_modes(folder: Path, folder_mode: int) -> None:
    """Give every folder under ``folder`` ``folder_mode`` and every file the same without execute bits (keeping
    the execute bits a file has, where the umask allows them)."""
    file_mode = folder_mode & 0o666
    for root, folders, files in os.walk(folder):
        for name in folders:
            os.chmod(os.path.join(root, name), folder_mode)
        for name in files:
            file = os.path.join(root, name)
            current = os.lstat(file).st_mode
            if not stat.S_ISLNK(current):
                os.chmod(file, file_mode | (current & 0o111 & folder_mode))


def _publish_exclusively(temporary: Path, path: Path) -> None:
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise
    except OSError:  # no hard links here (FAT, some network shares)
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        os.replace(temporary, path)


def sweep_temporaries(folder: Path, older_than: float = 0.0) -> list[Path]:
    """Delete what interrupted atomic writes left under ``folder`` (a process killed mid-write leaves its hidden
    temporary file or folder) and return the paths. Only what is named like our temporaries goes, never anything
    else; ``older_than`` (seconds since the last change inside) spares what a live process may be writing now."""
    swept = []
    deadline = time.time() - older_than
    for parent, folders, files in os.walk(folder):  # symlinked folders are not followed
        for name in [*folders, *files]:
            path = Path(parent) / name
            if not _OUR_TEMPORARY.fullmatch(name) or path.is_symlink():
                continue
            try:
                if _last_change(path) > deadline:
                    continue
                if path.is_dir():  # a folder written the same way
                    shutil.rmtree(path)
                    folders.remove(name)
                else:
                    path.unlink()
                swept.append(path)
            except OSError:  # gone already, or not ours to delete
                pass
    return swept


def _last_change(path: Path) -> float:
    if not path.is_dir():
        return path.lstat().st_mtime
    return max([path.lstat().st_mtime] + [(Path(parent) / name).lstat().st_mtime
                                          for parent, folders, files in os.walk(path) for name in folders + files])


class UnusableFolder(GraphflowError):
    """An output folder that is a file, cannot be created or cannot be written to."""


def check_writable_folder(folder: Path, label: str) -> None:
    """Raise :class:`UnusableFolder` unless files can be written in ``folder``, or it can be created: checked
    before any work whose result the first write would lose. Creates nothing. ``label`` names where the folder
    came from (``--out``, ``--data-dir``)."""
    folder = Path(folder)
    existing = next(p for p in (folder, *folder.absolute().parents) if p.exists())
    if not existing.is_dir():
        what = "a file" if existing == folder else f"{existing}, which is a file"
        raise UnusableFolder(f"{label} {folder}: expected a folder to write to, received {what}")
    if existing != folder:  # to be created by the first write: its nearest existing parent must take new entries
        if not os.access(existing, os.W_OK | os.X_OK):
            raise UnusableFolder(f"{label} {folder}: cannot create the folder, {existing} is not writable")
        return
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UnusableFolder(f"{label} {folder}: cannot write in the folder ({exc.strerror})") from None


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
