"""Which idle worker gets the next job: the one that already holds most of the job's plan in its cache.

A plan's content keys are Merkle keys (each names its node's computation and everything upstream), so the keys of
a job that a worker's cache holds are the part of the plan it will not recompute: the same checkpoint loaded, the
same prompt encoded, the same first pass of a hires fix. Each worker counts them with its own engine
(:func:`cached_prefix` over the keys it computes), because a key can depend on the machine: a model file's
fingerprint is its path, size and modification time there. The queue decides *which* job runs next (priority,
then FIFO); this rule only decides *where*, and never makes a job wait for a busy worker.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Container, Sequence


@dataclass(frozen=True)
class WorkerView:
    """What routing knows of one worker for one job: a stable name, whether it is free, how many of the job's
    plan nodes its cache holds, and its load (the jobs it has been given so far)."""

    name: str
    idle: bool
    cached: int = 0
    load: int = 0


def cached_prefix(plan_keys: Sequence[str], cache: Container[str]) -> int:
    """How many of the plan's nodes (their keys in plan order) this cache already holds."""
    return sum(1 for key in plan_keys if key in cache)


def choose_worker(workers: Sequence[WorkerView]) -> str | None:
    """The idle worker holding the longest cached part of the plan; on a tie (no worker holding any of it
    included) the least loaded, then the first by name. None when no worker is idle."""
    idle = [w for w in workers if w.idle]
    if not idle:
        return None
    return min(idle, key=lambda w: (-w.cached, w.load, w.name)).name
