"""An opt-in persistent cache of small node outputs, shared across processes (``GRAPHFLOW_DISK_CACHE=DIR``).

The engine's in-memory cache dies with the process, so every CLI run starts from nothing. This layer keeps
node outputs on disk under the same content keys (graphflow/cache.py), so a second ``graphflow run`` that
changes only a late input takes the early nodes' outputs from disk.

What is stored: only values whose type declared how it is written (:func:`register_value`); a node's outputs
are stored when every one of them is such a value. Output nodes, ``cache="never"`` nodes and the model pool
are never stored. The engine knows nothing of the types: a node library registers ``to_disk(value) ->
(tensors, meta)`` and ``from_disk(tensors, meta) -> value``, where ``tensors`` maps names to tensors of the
array library it names (``"torch"`` or ``"numpy"``) and ``meta`` is JSON.

Format: one safetensors file per key, ``DIR/ab/<key>.safetensors``; the JSON description (format version, the
key, each output's type tag and meta) sits in the file's own ``__metadata__``. Never pickle. A file that cannot be
read, is truncated, names another key or another format version, or whose meta its type's ``from_disk`` refuses,
is removed and counts as a miss; a file of a type this process does not know is skipped. Files are written with
:func:`graphflow.paths.atomic_write` (exclusive, never half-written), so concurrent writers of one key are safe:
the second finds the file there and leaves it. The folder is bounded in bytes
(``GRAPHFLOW_DISK_CACHE_BYTES``, default 1 GiB): after a write, the least recently used files (by modification
time, which a hit refreshes) are removed until the total fits.
"""
from __future__ import annotations

import importlib
import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .paths import atomic_write, check_writable_folder

FORMAT_VERSION = 1
META_KEY = "graphflow"
DEFAULT_BYTES = 1024**3
SUFFIX = ".safetensors"
KEY_PATTERN = re.compile(r"[0-9a-f]{64}")
ARRAY_LIBRARIES = {"torch": "safetensors.torch", "numpy": "safetensors.numpy"}
log = logging.getLogger("graphflow.disk_cache")


@dataclass(frozen=True)
class ValueCodec:
    tag: str
    type: type
    to_disk: Callable[[Any], tuple[dict[str, Any], Any]]
    from_disk: Callable[[dict[str, Any], Any], Any]
    arrays: str


_codecs_by_type: dict[type, ValueCodec] = {}
_codecs_by_tag: dict[str, ValueCodec] = {}


def register_value(value_type: type, tag: str, to_disk: Callable[[Any], tuple[dict[str, Any], Any]],
                   from_disk: Callable[[dict[str, Any], Any], Any], arrays: str = "torch") -> None:
    """Declare how values of ``value_type`` (exactly that class) are stored: ``to_disk`` gives named tensors and
    JSON meta, ``from_disk`` rebuilds the value from them and raises on anything it does not accept. ``tag``
    names the type in the files, so it must stay the same across versions of the node library."""
    if arrays not in ARRAY_LIBRARIES:
        raise ValueError(f"arrays must be one of {sorted(ARRAY_LIBRARIES)}, not {arrays!r}")
    known = _codecs_by_tag.get(tag)
    if known is not None and known.type is not value_type:
        raise ValueError(f"disk-cache tag {tag!r} is already used by {known.type.__qualname__}")
    codec = ValueCodec(tag, value_type, to_disk, from_disk, arrays)
    _codecs_by_type[value_type] = codec
    _codecs_by_tag[tag] = codec


def codec_of(value: Any) -> ValueCodec | None:
    return _codecs_by_type.get(type(value))


class DiskCache:
    """The files of one cache folder. ``get`` and ``put`` never raise for a bad file or a full disk: the
    cache is an optimisation, and a run must not fail because of it."""

    def __init__(self, folder: str | Path, max_bytes: int = DEFAULT_BYTES):
        self.folder = Path(folder)
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self.removed: list[tuple[str, str]] = []  # (file name, why) of every untrustworthy file removed

    @classmethod
    def from_env(cls, folder: str | Path | None = None) -> DiskCache | None:
        """The cache ``folder`` (or ``GRAPHFLOW_DISK_CACHE``) names, bounded by ``GRAPHFLOW_DISK_CACHE_BYTES``;
        None when neither names a folder."""
        from . import env

        folder = folder or env.read("GRAPHFLOW_DISK_CACHE")
        if not folder:
            return None
        max_bytes = env.read("GRAPHFLOW_DISK_CACHE_BYTES", DEFAULT_BYTES)
        path = Path(folder).expanduser()
        check_writable_folder(path, "disk cache")  # before the run, whose results it would fail to keep
        return cls(path, max_bytes)

    def path_of(self, key: str) -> Path:
        if not KEY_PATTERN.fullmatch(key):
            raise ValueError(f"not a content key: {key!r}")
        return self.folder / key[:2] / (key + SUFFIX)

    # ----------------------------------------------------------------------------------------------- reading

    def get(self, key: str) -> tuple[Any, ...] | None:
        """The outputs stored under ``key``, or None (absent, unreadable, foreign or of an unknown type)."""
        path = self.path_of(key)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        try:
            description = read_description(data)
        except ValueError as error:
            self._discard(path, str(error))
            return None
        if description.get("version") != FORMAT_VERSION or description.get("key") != key:
            self._discard(path, "written for another key or format version")
            return None
        outputs = description.get("outputs")
        if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
            self._discard(path, "no list of outputs in its description")
            return None
        codecs = [_codecs_by_tag.get(o.get("tag")) for o in outputs]
        if any(c is None for c in codecs):
            return None  # a type this process has not registered (another node pack): leave the file alone
        try:
            values = tuple(self._decode(data, index, codec, output["meta"])
                           for index, (codec, output) in enumerate(zip(codecs, outputs)))
        except Exception as error:  # noqa: BLE001 - whatever the file holds, it must not break the run
            self._discard(path, f"its content was refused: {type(error).__name__}: {error}")
            return None
        touch(path)
        return values

    def _decode(self, data: bytes, index: int, codec: ValueCodec, meta: Any) -> Any:
        tensors = self._arrays(codec.arrays, data)
        prefix = f"{index}."
        return codec.from_disk({name[len(prefix):]: t for name, t in tensors.items() if name.startswith(prefix)}, meta)

    def _arrays(self, library: str, data: bytes) -> dict[str, Any]:
        return importlib.import_module(ARRAY_LIBRARIES[library]).load(data)

    def _discard(self, path: Path, why: str) -> None:
        with self._lock:
            self.removed.append((path.name, why))
        path.unlink(missing_ok=True)

    # ----------------------------------------------------------------------------------------------- writing

    def put(self, key: str, outputs: tuple[Any, ...]) -> bool:
        """Store ``outputs`` under ``key`` when every one has a codec; True when a file for the key now exists."""
        codecs = [codec_of(value) for value in outputs]
        if not outputs or any(c is None for c in codecs) or len({c.arrays for c in codecs}) != 1:
            return False
        path = self.path_of(key)
        if path.is_file():
            touch(path)
            return True
        try:
            data = self._encode(key, outputs, codecs)
        except Exception:  # noqa: BLE001 - a value its codec cannot write this time is simply not stored
            log.debug("not stored on disk: %s", key, exc_info=True)
            return False
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda file: file.write(data))
        except FileExistsError:  # another process stored the same key meanwhile: same content
            return True
        except OSError:  # full disk, read-only folder: the run goes on without the disk cache
            return False
        self.evict()
        return True

    def _encode(self, key: str, outputs: tuple[Any, ...], codecs: list[ValueCodec]) -> bytes:
        tensors: dict[str, Any] = {}
        described = []
        for index, (value, codec) in enumerate(zip(outputs, codecs)):
            named, meta = codec.to_disk(value)
            tensors.update({f"{index}.{name}": t for name, t in named.items()})
            described.append({"tag": codec.tag, "meta": meta})
        description = json.dumps({"version": FORMAT_VERSION, "key": key, "outputs": described}, allow_nan=False)
        library = importlib.import_module(ARRAY_LIBRARIES[codecs[0].arrays])
        return library.save(tensors, metadata={META_KEY: description})

    def evict(self) -> None:
        """Remove least recently used files until the folder holds at most ``max_bytes``."""
        with self._lock:
            files = []
            for path in self.folder.glob(f"??/*{SUFFIX}"):
                try:
                    stat = path.stat()
                except OSError:
                    continue
                files.append((stat.st_mtime_ns, stat.st_size, path))
            total = sum(size for _, size, _ in files)
            for _, size, path in sorted(files):
                if total <= self.max_bytes:
                    break
                path.unlink(missing_ok=True)
                total -= size

    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.glob(f"??/*{SUFFIX}") if p.is_file())


def read_description(data: bytes) -> dict[str, Any]:
    """The graphflow description in a safetensors file's header, read without any array library; ValueError
    when the bytes are not a whole safetensors file (short, truncated, header not JSON, no description)."""
    if len(data) < 8:
        raise ValueError("shorter than a safetensors header")
    size = int.from_bytes(data[:8], "little")
    if size <= 0 or 8 + size > len(data):
        raise ValueError("truncated (its header runs past the end of the file)")
    try:
        header = json.loads(data[8:8 + size])
        description = json.loads(header["__metadata__"][META_KEY])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"header is not a graphflow description ({type(error).__name__})") from None
    if not isinstance(description, dict):
        raise ValueError("header is not a graphflow description")
    ends = [entry["data_offsets"][1] for name, entry in header.items()
            if name != "__metadata__" and isinstance(entry, dict) and isinstance(entry.get("data_offsets"), list)]
    if 8 + size + max(ends, default=0) != len(data):
        raise ValueError("truncated (its tensors end past, or before, the end of the file)")
    return description


def touch(path: Path) -> None:
    """Mark a file as just used (eviction removes the oldest first)."""
    try:
        os.utime(path)
    except OSError:
        pass
