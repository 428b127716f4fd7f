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
import os
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

from .workflow import canonical_json

DEFAULT_VALUE_BUDGET = 2 * 1024**3
DEFAULT_MAX_MODELS = 3


def content_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(parts).encode("utf-8")).hexdigest()


def sizeof(value: Any) -> int:
    """Bytes a value holds: its ``nbytes`` if it has one (tensors, arrays, socket values), else a shallow estimate."""
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    if isinstance(value, (list, tuple, set, frozenset)):
        return sys.getsizeof(value) + sum(sizeof(v) for v in value)
    if isinstance(value, dict):
        return sys.getsizeof(value) + sum(sizeof(k) + sizeof(v) for k, v in value.items())
    if is_dataclass(value) and not isinstance(value, type):
        return sum(sizeof(getattr(value, f.name)) for f in fields(value))
    return sys.getsizeof(value)


def digest(value: Any) -> str:
    """Content digest used by the mutation guard: a value's own ``__graphflow_digest__`` or its canonical JSON."""
    own = getattr(value, "__graphflow_digest__", None)
    if callable(own):
        return own()
    if isinstance(value, (list, tuple)):
        return content_key({"items": [digest(v) for v in value]})
    if isinstance(value, dict):
        return content_key({str(k): digest(v) for k, v in value.items()})
    return content_key({"repr": repr(value)})


@dataclass
class _Entry:
    outputs: tuple[Any, ...]
    nbytes: int


class ResultCache:
    def __init__(self, value_budget: int | None = None, max_models: int | None = None):
        self.value_budget = value_budget if value_budget is not None else int(os.environ.get("GRAPHFLOW_CACHE_BYTES", DEFAULT_VALUE_BUDGET))
        self.max_models = max_models if max_models is not None else int(os.environ.get("GRAPHFLOW_MAX_MODELS", DEFAULT_MAX_MODELS))
        self._values: OrderedDict[str, _Entry] = OrderedDict()
        self._models: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def value_bytes(self) -> int:
        return sum(e.nbytes for e in self._values.values())

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
            self._values.pop(key, None)
            if size > self.value_budget:
                return
            self._values[key] = _Entry(outputs, size)
            total = self.value_bytes
            while total > self.value_budget:
                _, evicted = self._values.popitem(last=False)
                total -= evicted.nbytes

    def __contains__(self, key: str) -> bool:
        return key in self._values or key in self._models

    def __len__(self) -> int:
        return len(self._values) + len(self._models)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._models.clear()

    def stats(self) -> dict[str, int]:
        return {"values": len(self._values), "value_bytes": self.value_bytes, "value_budget": self.value_budget,
                "models": len(self._models), "max_models": self.max_models}
