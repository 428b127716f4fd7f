"""Row 10: the engine stays as fast at its ten-thousandth cached value as at its tenth.

Two measurements, both without torch work (pure bookkeeping is what could grow):

* ``cache_ops``: a :class:`~graphflow.cache.ResultCache` holding N small values (its budget exactly full, so every
  new put also evicts the oldest entry), then the microseconds of one ``put`` of a new key and of one ``get`` of a
  random held key, for N = 10 ... 100,000;
* ``engine_jobs``: one long-lived Engine (as the server has) runs J identical-shape jobs of a chain of
  ``nodes`` bench-only nodes, each job with a new first value, so every node has a new key and the value pool
  grows by ``nodes`` entries per job; the engine seconds of each job.
"""
from __future__ import annotations

import gc
import random
import statistics
import time
from typing import Any

from graphflow.cache import ResultCache, sizeof
from graphflow.execute import Engine
from graphflow.node import Input, node, spec_of
from graphflow.registry import Registry


@node(outputs={"value": "BENCH_NUMBER"}, category="bench")
def BenchStep(previous=Input("BENCH_NUMBER", optional=True), add: float = 0.0):
    """Bench-only node: ``previous + add`` (a chain of them is a workflow of any length that computes nothing)."""
    return (previous or 0.0) + add


@node(output=True, category="bench")
def BenchEnd(value=Input("BENCH_NUMBER")):
    """Bench-only output node ending the chain."""
    return {"value": value}


class _Value:
    """A cached value of a stated size (what a small latent or conditioning looks like to the cache)."""

    nbytes = 256


def cache_ops(entries: int, operations: int = 2000, seed: int = 0) -> dict[str, float]:
    """Microseconds per put (of a new key, evicting one) and per get (of a held key) at ``entries`` entries."""
    size = sizeof((_Value(),))
    cache = ResultCache(value_budget=entries * size)
    for index in range(entries):
        cache.put(_key(index), (_Value(),))
    assert len(cache) == entries
    values = [(_Value(),) for _ in range(operations)]
    chosen = random.Random(seed).choices(range(operations, entries + operations), k=operations)
    gc.disable()  # as timeit does: a collection pass over the filled pool would land in one sample or another
    try:
        started = time.perf_counter()
        for index, value in enumerate(values, start=entries):
            cache.put(_key(index), value)
        put = time.perf_counter() - started
        started = time.perf_counter()
        for index in chosen:
            assert cache.get(_key(index)) is not None
        get = time.perf_counter() - started
    finally:
        gc.enable()
    assert len(cache) == entries  # each put evicted exactly one entry
    return {"entries": entries, "put_us": 1e6 * put / operations, "get_us": 1e6 * get / operations}


def _key(index: int) -> str:
    """A fresh 64-character key, as the engine's sha256 content keys are (made anew for every look-up)."""
    return f"{index:064x}"


def chain(nodes: int, first: float) -> dict[str, Any]:
    steps = {"n0": {"type": "BenchStep", "inputs": {"add": first}}}
    for index in range(1, nodes):
        steps[f"n{index}"] = {"type": "BenchStep", "inputs": {"previous": {"from": f"n{index - 1}", "output": "value"},
                                                              "add": 1.0}}
    steps["end"] = {"type": "BenchEnd", "inputs": {"value": {"from": f"n{nodes - 1}", "output": "value"}}}
    return {"graphflow": 1, "nodes": steps}


def engine_jobs(jobs: int, nodes: int) -> dict[str, Any]:
    """Engine seconds of each of ``jobs`` chain jobs on one engine; every node of every job is new to the cache."""
    registry = Registry()
    registry.add(spec_of(BenchStep))
    registry.add(spec_of(BenchEnd))
    engine = Engine(registry, check_mutations=False, cache=ResultCache(), disk_cache=None)
    engine.disk_cache = None  # the persistent cache ($GRAPHFLOW_CACHE_DIR) would measure the disk instead
    engine.run(chain(nodes, -1.0))  # warm-up (first calls of the validation and planning code), not counted
    seconds = []
    for job in range(jobs):
        report = engine.run(chain(nodes, float(job)))
        assert len(report.executed) == nodes + 1
        seconds.append(report.seconds)
    window = max(1, min(10, jobs // 2))
    first, last = statistics.median(seconds[:window]), statistics.median(seconds[-window:])
    return {"jobs": jobs, "nodes": nodes, "seconds": seconds, "first_median": first, "last_median": last,
            "last_over_first": last / first, "window": window, "cached_values": engine.cache.stats()["values"]}


def dict_get_us(entries: int, operations: int = 2000, seed: int = 0) -> float:
    """The floor for a get: microseconds per look-up in a plain dict of ``entries`` keys (memory, not algorithm,
    makes this grow with the entries: a bigger table misses the CPU caches more often)."""
    table = {_key(index): index for index in range(entries)}
    chosen = random.Random(seed).choices(range(entries), k=operations)
    gc.disable()
    try:
        started = time.perf_counter()
        for index in chosen:
            table[_key(index)]
        return 1e6 * (time.perf_counter() - started) / operations
    finally:
        gc.enable()


SIZES = (10, 1_000, 10_000, 100_000)
JOBS, NODES = 50, 500
FLAT = 2.0  # cost at 100,000 entries / at 10 (a get's against a plain dict's): walking the pool would be 10,000×
FLAT_JOBS = 1.5  # median engine seconds of the last 10 jobs / of the first 10


def measure(rounds: int = 5) -> dict[str, Any]:
    """Row 10's figures: the fastest of ``rounds`` rounds at each cache size (the cost of the operation itself;
    slower rounds are other work on a shared machine, as timeit reasons), and one series of engine jobs."""
    sizes = {}
    for entries in SIZES:
        runs = [cache_ops(entries, seed=r) for r in range(rounds)]
        sizes[entries] = {"put_us": min(r["put_us"] for r in runs), "get_us": min(r["get_us"] for r in runs),
                          "dict_get_us": min(dict_get_us(entries, seed=r) for r in range(rounds))}
    small, big = sizes[SIZES[0]], sizes[SIZES[-1]]
    growth = {kind: big[kind] / small[kind] for kind in ("put_us", "get_us", "dict_get_us")}
    growth["get_over_dict"] = growth["get_us"] / growth["dict_get_us"]
    return {"sizes": sizes, "growth": growth, "value": max(growth["put_us"], growth["get_over_dict"]),
            "jobs": engine_jobs(JOBS, NODES)}


def remark(detail: dict[str, Any]) -> str:
    sizes, jobs = detail["sizes"], detail["jobs"]
    cost = "; ".join(f"{int(n):,}: {s['put_us']:.1f} / {s['get_us']:.2f} µs" for n, s in sizes.items())
    growth = detail["growth"]
    return (f"put / get at {cost}: put grows {growth['put_us']:.2f}×, get {growth['get_us']:.2f}× where a plain "
            f"dict's get grows {growth['dict_get_us']:.2f}×; engine, {jobs['jobs']} jobs of {jobs['nodes']} new nodes on one engine: first "
            f"{1000 * jobs['first_median']:.1f} ms, last {1000 * jobs['last_median']:.1f} ms per job "
            f"({jobs['cached_values']:,} values cached at the end)")


NOTE = ("10. The cache and the engine at scale, bookkeeping only (no torch work): a `ResultCache` holding N values "
        "with its byte budget exactly full, so every put of a new key also evicts the oldest entry; microseconds "
        "per put and per get (of a random held key, looked up with a freshly made 64-character key as the engine's "
        "are), the fastest of 5 rounds of 2,000 operations with the garbage collector paused, at N = 10, 1,000, 10,000 and 100,000. Value: the larger of put(100,000) / put(10) "
        "and get's growth over the same sizes divided by a plain dict's (a bigger table misses the CPU caches more "
        f"often, which no algorithm avoids); flat means ≤ {FLAT:g}. Then one long-lived Engine, as the server has, "
        f"runs {JOBS} identical-shape jobs, each a chain of {NODES} bench-only `BenchStep` nodes whose first value "
        "is new, so every node has a new key (after one warm-up job) and the value pool grows by 500 entries per job; the engine time of "
        f"the last 10 jobs over that of the first 10 (medians) must be ≤ {FLAT_JOBS:g}.")
