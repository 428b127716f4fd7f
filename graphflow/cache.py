"""Content-addressed result cache.

A node's key is the sha256 of canonical JSON of (type, version, literal inputs, fingerprint, and the keys
of the upstream outputs it links to) — a Merkle key: it names the *content* of the computation, not the
node id, so it is stable across processes and shared by any workflow that asks for the same thing.

Two pools:
- values: an LRU bounded by a byte budget (sizes come from each value's ``nbytes``);
- models: loaded weights, an LRU bounded by a count, so two workflows on one checkpoint share one copy.
A value bigger than the whole budget is simply not kept.
"""
from __future__ import annotations

import hashlib
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, Callable, Iterator

from . import env
from .workflow import canonical_json

DEFAULT_VALUE_BUDGET = 2 * 1024**3
DEFAULT_MAX_MODELS = 3


def content_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(parts).encode("utf-8")).hexdigest()


def is_container(value: Any) -> bool:
    """Whether :func:`walk` looks inside ``value``: lists, tuples, sets, dicts and dataclass instances."""
    return isinstance(value, (list, tuple, set, frozenset, dict)) or (is_dataclass(value) and not isinstance(value, type))


def walk(value: Any, is_leaf: Callable[[Any], bool] = lambda part: False, path: str = "") -> Iterator[tuple[str, Any]]:
    """``(path, part)`` for ``value`` and every part inside it, depth first: items of lists, tuples and sets
    (``[0]``), entries of dicts (``['key']``, keys in sorted order) and fields of dataclass instances (``.name``).
    Parts that ``is_leaf`` accepts are yielded but not looked into.

    The one walk over values: the cache's sizes and digests use it, and node packs build theirs on it."""
    yield path, value
    if is_leaf(value) or not is_container(value):
        return
    if isinstance(value, dict):
        children = [(f"{path}[{key!r}]", value[key]) for key in sorted(value, key=str)]
    elif isinstance(value, (set, frozenset)):
        children = [(f"{path}[{i}]", item) for i, item in enumerate(sorted(value, key=repr))]
    elif isinstance(value, (list, tuple)):
        children = [(f"{path}[{i}]", item) for i, item in enumerate(value)]
    else:
        children = [(f"{path}.{f.name}", getattr(value, f.name)) for f in fields(value)]
    for child_path, child in children:
        yield from walk(child, is_leaf, child_path)


def _nbytes(value: Any) -> int | None:
    nbytes = getattr(value, "nbytes", None)
    return nbytes if isinstance(nbytes, int) else None


def sizeof(value: Any) -> int:
    """Bytes a value holds: each part's ``nbytes`` where it has one (tensors, arrays, socket values), else a shallow
    estimate (``sys.getsizeof`` of each container and item; a dataclass instance counts only through its fields)."""
    total = 0
    for _, part in walk(value, is_leaf=lambda part: _nbytes(part) is not None):
        nbytes = _nbytes(part)
        if nbytes is not None:
            total += nbytes
        elif not (is_dataclass(part) and not isinstance(part, type)):
            total += sys.getsizeof(part)
    return total


def _own_digest(value: Any) -> Callable[[], str] | None:
    own = getattr(value, "__graphflow_digest__", None)
    return own if callable(own) else None


def digest(value: Any) -> str:
    """Content digest used by the mutation guard: each part's own ``__graphflow_digest__`` where it has one, the
    shape of the containers around them, and the ``repr`` of everything else."""
    hasher = hashlib.sha256()
    for path, part in walk(value, is_leaf=lambda part: _own_digest(part) is not None):
        own = _own_digest(part)
        content = own() if own is not None else type(part).__name__ if is_container(part) else repr(part)
        hasher.update(f"{path}\0{content}\0".encode("utf-8", "backslashreplace"))
    return hasher.hexdigest()


@dataclass
class _Entry:
    outputs: tuple[Any, ...]
    nbytes: int


class ResultCache:
    def __init__(self, value_budget: int | None = None, max_models: int | None = None):
        self.value_budget = value_budget if value_budget is not None else env.read("GRAPHFLOW_CACHE_BYTES", DEFAULT_VALUE_BUDGET)
        self.max_models = max_models if max_models is not None else env.read("GRAPHFLOW_MAX_MODELS", DEFAULT_MAX_MODELS)
        self._values: OrderedDict[str, _Entry] = OrderedDict()
        self._models: OrderedDict[str, _Entry] = OrderedDict()
        self._value_bytes = 0  # running total of the values' sizes: a put never re-sums the pool
        self._lock = threading.Lock()

    @property
    def value_bytes(self) -> int:
        return self._value_bytes

    def get(self, key: str) -> tuple[Any, ...] | None:
        with self._lock:
            for pool in (self._values, self._models):
                entry = pool.get(key)
                if entry is not None:
                    pool.move_to_end(key)
                    return entry.outputs
        return None

    def put(self, key: str, outputs: tuple[Any, ...], pool: str = "value") -> None:
        with self._lock:
            if pool == "model":
                self._models[key] = _Entry(outputs, 0)
                self._models.move_to_end(key)
                while len(self._models) > self.max_models:
                    self._models.popitem(last=False)
                return
            size = sizeof(outputs)
            replaced = self._values.pop(key, None)
            if replaced is not None:
                self._value_bytes -= replaced.nbytes
            if size > self.value_budget:
                return
            self._values[key] = _Entry(outputs, size)
            self._value_bytes += size
            while self._value_bytes > self.value_budget:  # oldest first: O(entries evicted)
                _, evicted = self._values.popitem(last=False)
                self._value_bytes -= evicted.nbytes

    def __contains__(self, key: str) -> bool:
        return key in self._values or key in self._models

    def __len__(self) -> int:
        return len(self._values) + len(self._models)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._models.clear()
            self._value_bytes = 0

    def stats(self) -> dict[str, int]:
        return {"values": len(self._values), "value_bytes": self.value_bytes, "value_budget": self.value_budget,
                "models": len(self._models), "max_models": self.max_models}
