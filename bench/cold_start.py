"""Row 9: a cold ``graphflow run workflows/txt2img.json`` against the floor of doing the same job by hand.

Each side is a fresh process, started the way a user starts it:

* graphflow: ``graphflow run workflows/txt2img.json --out DIR`` with an empty ``GRAPHFLOW_CACHE_DIR`` (and no
  disk cache), exactly the shipped workflow on the built-in ``toy-shapes`` model;
* the floor: ``bench/cold_floor.py``: imports torch + diffusers + transformers, builds the same three modules
  from the model folder's configs with plain ``from_pretrained`` calls, runs the same generation by hand and
  writes the PNG (see that file).

Both get the same thread count through ``OMP_NUM_THREADS``. The two images are compared pixel by pixel, so the
sides are known to do the same work. "Our overhead" is graphflow's process wall time minus the floor's, pair by
pair; the CPU seconds of both processes (from ``wait4``) are recorded next to it, as they suffer less from other
jobs on a shared machine. The sides alternate (A B, B A, ...) after one discarded warm-up pair, which puts the
libraries' files in the page cache for both alike.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench import common

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / "workflows" / "txt2img.json"
MODEL_FOLDER = ROOT / "nodes" / "models" / "toy-shapes"
NODE_LINE = re.compile(r"^\s+(\S+) \((\w+)\) ([0-9.]+)s\s*$")
DONE_LINE = re.compile(r"done in ([0-9.]+)s")


def floor_job() -> dict[str, Any]:
    """The generation ``workflows/txt2img.json`` describes, as the floor script's arguments."""
    nodes = json.loads(WORKFLOW.read_text())["nodes"]
    inputs = {node_id: spec["inputs"] for node_id, spec in nodes.items()}
    if inputs["ckpt"]["name"] != "toy-shapes" or inputs["schedule"]["sampler"] != "euler_a":
        raise AssertionError("bench/cold_floor.py reproduces toy-shapes with euler_a; txt2img.json now says otherwise")
    if inputs["empty"]["width"] != inputs["empty"]["height"]:
        raise AssertionError("bench/cold_floor.py draws square images")
    return {"prompt": inputs["positive"]["text"], "negative": inputs["negative"]["text"],
            "size": inputs["empty"]["width"], "steps": inputs["schedule"]["steps"], "seed": inputs["noise"]["seed"],
            "cfg": inputs["sample"]["cfg"]}


def graphflow_command() -> list[str]:
    script = Path(sys.executable).with_name("graphflow")  # the console script users run, when installed
    return [str(script)] if script.is_file() else [sys.executable, "-m", "graphflow"]


def timed_process(command: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run a fresh process; its wall seconds (as seen from here), CPU seconds (user + system) and output."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = process.communicate()  # communicate() reaps the child: take its rusage from the children total
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} ... failed ({process.returncode}):\n{stderr[-3000:]}")
    return {"wall": wall, "stdout": stdout, "stderr": stderr}


def cpu_of(run) -> tuple[float, Any]:
    """CPU seconds of the children reaped while ``run()`` ran, and its result."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), result


def node_seconds(stderr: str) -> dict[str, float]:
    """Per-node seconds from graphflow's progress lines (``  ckpt (LoadCheckpoint) 3.22s``)."""
    found = {}
    for line in stderr.replace("\r", "\n").splitlines():
        match = NODE_LINE.match(line)
        if match:
            found[match.group(1)] = float(match.group(3))
    return found


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as opened:
        return np.asarray(opened.convert("RGB"), dtype=np.int16)


class Sides:
    def __init__(self, scratch: Path, threads: int):
        self.scratch, self.threads = scratch, threads
        self.job = floor_job()
        base = {k: v for k, v in os.environ.items() if not k.startswith("GRAPHFLOW_")}
        self.env = {**base, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}

    def graphflow(self, index: int) -> dict[str, Any]:
        folder = Path(tempfile.mkdtemp(prefix=f"cold-gf-{index}-", dir=self.scratch))
        env = {**self.env, "GRAPHFLOW_CACHE_DIR": str(folder / "cache")}  # an empty cache: nothing built before
        command = graphflow_command() + ["run", str(WORKFLOW), "--out", str(folder / "out")]
        cpu, done = cpu_of(lambda: timed_process(command, env))
        images = sorted((folder / "out").glob("*.png"))
        if len(images) != 1:
            raise AssertionError(f"graphflow run wrote {len(images)} images")
        engine = DONE_LINE.search(done["stderr"])
        return {"wall": done["wall"], "cpu": cpu, "image": images[0], "nodes": node_seconds(done["stderr"]),
                "engine": float(engine.group(1)) if engine else None}

    def floor(self, index: int) -> dict[str, Any]:
        folder = Path(tempfile.mkdtemp(prefix=f"cold-floor-{index}-", dir=self.scratch))
        image = folder / "floor.png"
        command = [sys.executable, str(ROOT / "bench" / "cold_floor.py"), str(MODEL_FOLDER), str(image),
                   json.dumps(self.job)]
        cpu, done = cpu_of(lambda: timed_process(command, self.env))
        marks = json.loads(done["stdout"].strip().splitlines()[-1])
        return {"wall": done["wall"], "cpu": cpu, "image": image, "marks": marks}


def measure(pairs: int, threads: int, scratch: Path, warm_up: bool = True) -> dict[str, Any]:
    """``pairs`` alternating pairs (after one discarded warm-up pair when ``warm_up``); every figure per pair."""
    sides = Sides(scratch, threads)
    if warm_up:
        sides.graphflow(-1), sides.floor(-1)
    # the process wall times below, not common.alternate's own timing, which includes making the temp folders
    measured = common.alternate(sides.graphflow, sides.floor, pairs, lambda a, b: {"a": a, "b": b})
    per_pair = []
    for pair in measured:
        ours, floor = pair.extra["a"], pair.extra["b"]
        difference = np.abs(pixels(ours["image"]) - pixels(floor["image"])).max()
        per_pair.append({
            "graphflow_seconds": round(ours["wall"], 4), "floor_seconds": round(floor["wall"], 4),
            "overhead_seconds": round(ours["wall"] - floor["wall"], 4),
            "graphflow_cpu": round(ours["cpu"], 4), "floor_cpu": round(floor["cpu"], 4),
            "overhead_cpu": round(ours["cpu"] - floor["cpu"], 4), "graphflow_first": pair.a_first,
            "graphflow_engine_seconds": ours["engine"], "graphflow_nodes": ours["nodes"],
            "floor_marks": {k: round(v, 4) for k, v in floor["marks"].items() if isinstance(v, float)},
            "max_pixel_difference": int(difference)})
    summary = lambda key: common.summary([p[key] for p in per_pair])  # noqa: E731
    return {"pairs": per_pair, "overhead": summary("overhead_seconds"), "overhead_cpu": summary("overhead_cpu"),
            "graphflow": summary("graphflow_seconds"), "floor": summary("floor_seconds"),
            "graphflow_cpu": summary("graphflow_cpu"), "floor_cpu": summary("floor_cpu"),
            "floor_import_and_load": common.summary([p["floor_marks"]["loaded"] for p in per_pair]),
            "load_checkpoint": common.summary([p["graphflow_nodes"].get("ckpt", float("nan")) for p in per_pair]),
            "same_image": all(p["max_pixel_difference"] == 0 for p in per_pair),
            "setup": {"workflow": "workflows/txt2img.json", **sides.job, "threads": threads,
                      "graphflow_command": " ".join(Path(c).name for c in graphflow_command()) + " run ..."}}

