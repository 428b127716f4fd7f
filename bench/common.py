"""Measurement helpers shared by the benchmark rows: alternating pairs, summaries, line fits, memory, machine facts."""
from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable


def summary(values: list[float]) -> dict[str, Any]:
    """median / min / max / count of a list of numbers."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


@dataclass
class Pair:
    """One alternating measurement: seconds of side A and side B, which went first, and whatever the sides returned."""

    a: float
    b: float
    a_first: bool
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.a / self.b


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def alternate(side_a: Callable[[int], Any], side_b: Callable[[int], Any], pairs: int,
              check: Callable[[Any, Any], dict[str, Any]] | None = None) -> list[Pair]:
    """Run A and B ``pairs`` times each, swapping which goes first every pair (A B, B A, A B, ...), so that a
    machine getting slower or faster over the run weighs on both sides alike. Each side gets the pair index
    (e.g. to derive a seed). ``check(result_a, result_b)`` may assert the two results agree; what it returns is
    kept in ``Pair.extra``."""
    measured = []
    for index in range(pairs):
        a_first = index % 2 == 0
        if a_first:
            ta, ra = timed(lambda: side_a(index))
            tb, rb = timed(lambda: side_b(index))
        else:
            tb, rb = timed(lambda: side_b(index))
            ta, ra = timed(lambda: side_a(index))
        measured.append(Pair(ta, tb, a_first, check(ra, rb) if check else {}))
    return measured


def pair_detail(pairs: list[Pair]) -> dict[str, Any]:
    """The JSON detail of a list of pairs: the ratio summary plus every pair's seconds."""
    return {**summary([p.ratio for p in pairs]),
            "pairs": [{"a_seconds": round(p.a, 6), "b_seconds": round(p.b, 6), "ratio": round(p.ratio, 5),
                       "a_first": p.a_first, **p.extra} for p in pairs]}


def fit_line(xs: list[float], ys: list[float]) -> dict[str, float]:
    """Least-squares ``y = intercept + slope·x`` and its coefficient of determination R²."""
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys))
    slope = sxy / sxx
    intercept = mean_y - slope * mean_x
    ss_res = sum((y - (intercept + slope * x)) ** 2 for x, y in zip(xs, ys))
    ss_tot = sum((y - mean_y) ** 2 for y in ys)
    return {"slope": slope, "intercept": intercept, "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0}


def proc_status_bytes(name: str) -> int:
    """A memory line of /proc/self/status (VmRSS = resident now, VmHWM = peak resident) in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024  # reported in kB
    raise KeyError(name)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    """CPU model, cores, RAM, library versions — what a reader needs to compare these numbers with theirs."""
    import diffusers
    import torch
    import transformers

    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    ram = 0
    try:
        with open("/proc/meminfo") as info:
            ram = next(int(line.split()[1]) * 1024 for line in info if line.startswith("MemTotal:"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(ram / 1024**3, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
    }
