"""graphflow benchmarks: engine overhead against diffusers, cache wins, memory, server throughput, scaling.

    python bench/run.py            # the full run (several minutes); writes bench/RESULTS.md and bench/results.json
    python bench/run.py --quick    # about a minute: fewer pairs, smaller sizes
    python bench/run.py --smoke    # seconds: tiny model only, 2 pairs (keeps the script working; numbers mean little)
    python bench/run.py --out DIR --work DIR --threads N --profile

Every comparison is made in one process (or one script) with the two sides ALTERNATING (A B, B A, ...), and
reports the median of the pairs with min and max: the machines this runs on are shared and noisy. Wall-clock
seconds are what the targets apply to; CPU seconds of the process are recorded next to them, as they suffer
less from other jobs on the machine. See ``notes()`` below (also written to RESULTS.md) for what each row does.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["GRAPHFLOW_CHECK_MUTATIONS"] = "0"  # the mutation guard hashes every input twice per node: tests only

import torch  # noqa: E402

from bench import cache_scale, comfy_api, common, sides  # noqa: E402
from bench.small_model import SMALL_NAME, small_sd_folder  # noqa: E402
from graphflow.context import Settings  # noqa: E402

TINY = "tiny-sd"


# ------------------------------------------------------------------------------------------------ configuration


@dataclass(frozen=True)
class Config:
    """How much work each row does. ``big`` is the model the targets apply to (the small model, or tiny in smoke)."""

    mode: str
    big: str
    size: int  # txt2img / img2img side length on the big model
    steps: int
    pairs: int
    tiny_pairs: int
    hires_size: int  # hires fix first pass (the second is twice as large)
    hires_steps: int
    hires_pairs: int
    shared_runs: int  # row 5 subprocesses
    peak_pairs: int  # row 6 subprocess pairs
    server_jobs: int
    scale_steps: tuple[int, ...]
    scale_steps_size: int
    scale_sizes: tuple[int, ...]
    scale_sizes_steps: int
    scale_rounds: int
    cold_pairs: int  # row 9 process pairs (each a fresh graphflow CLI and a fresh floor process)


CONFIGS = {
    "full": Config("full", SMALL_NAME, 256, 20, 11, 11, 128, 10, 7, 5, 5, 100,
                   (10, 20, 40), 128, (64, 128, 192, 256), 10, 3, 7),
    "quick": Config("quick", SMALL_NAME, 128, 10, 5, 5, 64, 10, 5, 1, 1, 30,
                    (5, 10, 20), 64, (64, 128, 192), 5, 1, 3),
    "smoke": Config("smoke", TINY, 64, 4, 2, 2, 64, 4, 2, 1, 1, 3,
                    (2, 4), 64, (64, 128), 2, 1, 1),
}
TINY_SIZE, TINY_STEPS = 64, 10
TXT2IMG_SAMPLER, IMG2IMG_SAMPLER = "euler_a", "euler"  # as in workflows/txt2img.json and img2img.json


class Bench:
    """State shared by the rows: config, folders, one engine (values never kept) and the rows measured so far."""

    def __init__(self, config: Config, work: Path, threads: int, profile: bool):
        self.config, self.work, self.threads, self.profile = config, work, threads, profile
        self.models_dir = work / "models"
        self.scratch = Path(tempfile.mkdtemp(prefix="run-", dir=work))  # outputs, children, server data: removed at the end
        self.settings = Settings(models_dir=self.models_dir, input_dir=work / "inputs", output_dir=self.scratch / "outputs")
        self.registry = sides.bench_registry()
        self.engine = sides.make_engine(self.settings, self.registry, keep_values=False)
        self.rows: list[dict[str, Any]] = []
        self.diffusers: dict[str, sides.DiffusersSide] = {}

    def loaded(self, ckpt: str) -> dict[str, Any]:
        """The checkpoint as LoadCheckpoint gives it (loaded once into the engine's model pool)."""
        return self.engine.run(sides.txt2img(ckpt, 64, 1, 0)).values["ckpt"]

    def picture(self, size: int) -> str:
        return sides.test_picture(self.settings.input_dir / f"bench_{size}.png", size)

    def child_args(self, **args: Any) -> dict[str, Any]:
        return {"models_dir": str(self.models_dir), "input_dir": str(self.settings.input_dir),
                "output_dir": str(Path(tempfile.mkdtemp(prefix="child-", dir=self.scratch))), "threads": self.threads,
                **args}

    def children(self, kinds: list[str], **args: Any) -> dict[str, dict[str, Any]]:
        """Run ``bench/children.py KIND`` for each kind in a fresh process, one after the other; their JSON answers."""
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads),
               "PYTHONPATH": str(ROOT)}
        answers = {}
        for kind in kinds:
            command = [sys.executable, "-m", "bench.children", kind, json.dumps(self.child_args(**args))]
            done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"bench.children {kind} failed:\n{done.stderr[-3000:]}")
            answers[kind] = json.loads(done.stdout.strip().splitlines()[-1])
        return answers


def in_process(bench: Bench, kind: str, **args: Any) -> dict[str, Any]:
    """A bench.children measurement run in this process (smoke runs only: memory figures are then meaningless)."""
    from bench import children

    return {**children.KINDS[kind](bench.child_args(**args)), "rss_torch": common.proc_status_bytes("VmRSS")}


def row(number: int, name: str, value: float | None, unit: str, target: str, met: bool, stats: dict[str, Any] | None,
        detail: dict[str, Any], pairs: list | None = None) -> dict[str, Any]:
    """One results.json row: the headline value and verdict, the median/min/max/n it comes from, every pair."""
    stats = stats or {}
    return {"id": number, "name": name, "value": value, "unit": unit, "target": target, "met": bool(met),
            "median": stats.get("median"), "min": stats.get("min"), "max": stats.get("max"), "n": stats.get("n"),
            "pairs": pairs if pairs is not None else stats.get("pairs", []), "detail": detail}


# ------------------------------------------------------------------------------------------- rows 1 and 2: overhead


def overhead_pairs(bench: Bench, ckpt: str, kind: str, size: int, steps: int, pairs: int) -> dict[str, Any]:
    """graphflow (A) against diffusers (B) on the same modules, alternating, identical pixels asserted per pair."""
    engine = bench.engine
    sampler = TXT2IMG_SAMPLER if kind == "txt2img" else IMG2IMG_SAMPLER
    key = f"{ckpt}/{sampler}"
    if key not in bench.diffusers:
        bench.diffusers[key] = sides.DiffusersSide(bench.loaded(ckpt), sampler)
    theirs = bench.diffusers[key]
    picture = bench.picture(size) if kind == "img2img" else None

    def workflow(index: int) -> dict:
        seed = 1000 + index  # a new seed each pair; the value budget of 0 already makes every node but ckpt rerun
        if kind == "txt2img":
            return sides.txt2img(ckpt, size, steps, seed)
        return sides.img2img(ckpt, picture, steps, seed)

    bookkeeping: list[float] = []

    def graphflow(index: int):
        started = time.perf_counter()
        cpu = time.process_time()
        report = engine.run(workflow(index))
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        bookkeeping.append(wall - sum(report.timings.values()))
        return report.values["decode"]["image"].pixels, cpu

    def diffusers(index: int):
        cpu = time.process_time()
        pixels = theirs.txt2img(workflow(index)) if kind == "txt2img" else theirs.img2img(workflow(index), bench.settings.input_dir)
        return pixels, time.process_time() - cpu

    def check(ours, other) -> dict[str, Any]:
        return {**sides.same_pixels(ours[0], other[0]), "a_cpu": round(ours[1], 6), "b_cpu": round(other[1], 6)}

    for warm in (-2, -1):  # first calls pay one-time costs (lazy imports, allocator growth) on both sides
        check(graphflow(warm), diffusers(warm))
    bookkeeping.clear()
    measured = common.alternate(graphflow, diffusers, pairs, check)
    detail = common.pair_detail(measured)
    detail["cpu_ratio"] = common.summary([p.extra["a_cpu"] / p.extra["b_cpu"] for p in measured])
    detail["engine_bookkeeping_ms"] = common.summary([1000 * b for b in bookkeeping])
    detail["graphflow_seconds"] = common.summary([p.a for p in measured])
    detail["diffusers_seconds"] = common.summary([p.b for p in measured])
    detail["setup"] = {"model": ckpt, "size": size, "steps": steps, "sampler": sampler}
    if bench.profile and ckpt == bench.config.big and kind == "txt2img":
        detail["profile_file"] = str(profile_graphflow(bench, lambda: engine.run(workflow(0))))
    return detail


def save_image_cost(bench: Bench, ckpt: str, size: int, steps: int, runs: int) -> dict[str, Any]:
    """What SaveImage (PNG encoding with metadata, atomic write) adds to a txt2img run, measured on its own."""
    seconds, shares = [], []
    for index in range(runs):
        report = bench.engine.run(sides.txt2img(ckpt, size, steps, 2000 + index, keep=False))
        seconds.append(report.timings["save"])
        shares.append(report.timings["save"] / report.seconds)
    return {"save_ms": common.summary([1000 * s for s in seconds]), "share_of_run": common.summary(shares)}


def profile_graphflow(bench: Bench, run: Callable[[], Any], runs: int = 3) -> Path:
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(runs):
        run()
    profiler.disable()
    path = bench.work / "profile_txt2img.txt"
    with open(path, "w") as out:
        stats = pstats.Stats(profiler, stream=out).sort_stats("cumulative")
        stats.print_stats(40)
        stats.sort_stats("tottime").print_stats(25)
    return path


def row_overhead(bench: Bench, number: int, kind: str) -> dict[str, Any]:
    c = bench.config
    big = overhead_pairs(bench, c.big, kind, c.size, c.steps, c.pairs)
    detail: dict[str, Any] = {"model": big.pop("setup"), **{k: v for k, v in big.items() if k not in ("pairs",)}}
    if c.big != TINY:
        tiny = overhead_pairs(bench, TINY, kind, TINY_SIZE, TINY_STEPS, c.tiny_pairs)
        detail["tiny"] = {k: v for k, v in tiny.items()}
    if kind == "txt2img":
        detail["save_image"] = save_image_cost(bench, c.big, c.size, c.steps, 3)
    name = {"txt2img": "txt2img: graphflow / StableDiffusionPipeline time",
            "img2img": "img2img: graphflow / StableDiffusionImg2ImgPipeline time"}[kind]
    value = big["median"]
    return row(number, name, value, "ratio", "≤ 1.02", value <= 1.02, big, detail, big["pairs"])


# ---------------------------------------------------------------------------------------- rows 3 and 4: the cache


def rows_cache(bench: Bench) -> list[dict[str, Any]]:
    """Per pair: a first hires-fix run on an empty value cache (the checkpoint already loaded), then the identical
    workflow again, then the workflow with only the second pass's seed changed."""
    c = bench.config
    engine = sides.make_engine(bench.settings, bench.registry)  # a normal engine: values are kept
    ckpt = c.big
    engine.run(sides.hires_fix(ckpt, c.hires_size, c.hires_steps))  # load the checkpoint, warm up
    identical, reseeded = [], []
    for index in range(c.hires_pairs):
        workflow = sides.hires_fix(ckpt, c.hires_size, c.hires_steps, seed2=43)
        sides.fresh_values(engine, workflow)
        first_s, first = common.timed(lambda: engine.run(workflow))
        again_s, again = common.timed(lambda: engine.run(workflow))
        if again.executed:
            raise AssertionError(f"identical rerun executed {again.executed}")
        changed = sides.hires_fix(ckpt, c.hires_size, c.hires_steps, seed2=5000 + index)
        changed_s, changed_report = common.timed(lambda: engine.run(changed))
        second_pass = changed_report.executed  # the nodes downstream of noise2
        share = sum(first.timings[n] for n in second_pass) / first_s
        identical.append({"first_seconds": round(first_s, 6), "rerun_seconds": round(again_s, 6),
                          "ratio": again_s / first_s})
        reseeded.append({"first_seconds": round(first_s, 6), "rerun_seconds": round(changed_s, 6),
                         "ratio": changed_s / first_s, "second_pass_share": share,
                         "excess": changed_s / first_s - share, "executed": second_pass})
    setup = {"model": ckpt, "first_pass": c.hires_size, "second_pass": 2 * c.hires_size, "steps": c.hires_steps}
    ratio3 = common.summary([p["ratio"] for p in identical])
    row3 = row(3, "hires fix rerun, nothing changed: rerun / first run time", ratio3["median"], "ratio", "≤ 0.02",
               ratio3["median"] <= 0.02, ratio3,
               {"setup": setup, "rerun_ms": common.summary([1000 * p["rerun_seconds"] for p in identical])}, identical)
    ratio4 = common.summary([p["ratio"] for p in reseeded])
    share = common.summary([p["second_pass_share"] for p in reseeded])
    excess = common.summary([p["excess"] for p in reseeded])
    row4 = row(4, "hires fix rerun, second-pass seed changed: rerun / first run time", ratio4["median"], "ratio",
               f"≤ second pass's share + 0.05 = {share['median']:.3f} + 0.05", excess["median"] <= 0.05, ratio4,
               {"setup": setup, "second_pass_share": share, "excess_over_share": excess}, reseeded)
    return [row3, row4]


# -------------------------------------------------------------------------------------------- rows 5 and 6: memory


def row_shared_weights(bench: Bench) -> dict[str, Any]:
    c = bench.config
    args = dict(ckpt=c.big, size=c.size, steps=c.steps)
    if c.mode == "smoke":  # in this process, to save a process start: the figure means nothing here
        runs = [in_process(bench, "shared-weights", **args)]
    else:
        runs = [bench.children(["shared-weights"], **args)["shared-weights"] for _ in range(c.shared_runs)]
    percent = lambda key: common.summary([100 * r[key] / r["weights"] for r in runs])  # noqa: E731
    growth = percent("growth")
    shared = all(r["checkpoint_cached"] and r["same_unet_object"] for r in runs)
    detail = {"setup": {"model": c.big, "size": c.size, "steps": c.steps, "first": "txt2img", "second": "img2img"},
              "weights_mb": runs[0]["weights"] / 1e6, "growth_mb": common.summary([r["growth"] / 1e6 for r in runs]),
              "new_cached_values_mb": common.summary([r["new_cached_value_bytes"] / 1e6 for r in runs]),
              "new_cached_values_percent": percent("new_cached_value_bytes"),
              "growth_untrimmed_percent": percent("growth_untrimmed"),
              "weights_shared": shared, "control_reload_growth_percent": percent("control_growth"),
              "processes": len(runs)}
    keys = ("growth", "growth_untrimmed", "new_cached_value_bytes", "control_growth", "weights", "checkpoint_cached",
            "same_unet_object")
    return row(5, "second workflow on the same checkpoint: RSS growth / weight size", growth["median"], "%",
               "< 5 %", growth["median"] < 5 and shared, growth, detail, [{k: r[k] for k in keys} for r in runs])


def row_peak(bench: Bench) -> dict[str, Any]:
    c = bench.config
    args = dict(ckpt=c.big, size=c.hires_size, steps=c.hires_steps)
    pairs = []
    for index in range(c.peak_pairs):
        order = ("peak-graphflow", "peak-diffusers") if index % 2 == 0 else ("peak-diffusers", "peak-graphflow")
        if c.mode == "smoke":  # in this process, to save two process starts: the figure means nothing here
            results = {kind: in_process(bench, kind, **args) for kind in order}
        else:
            results = bench.children(list(order), **args)
        ours, theirs = results["peak-graphflow"], results["peak-diffusers"]
        pairs.append({"graphflow_peak": ours["peak"], "diffusers_peak": theirs["peak"],
                      "ratio": ours["peak"] / theirs["peak"],
                      "ratio_above_torch": (ours["peak"] - ours["rss_torch"]) / (theirs["peak"] - theirs["rss_torch"]),
                      "graphflow_first": index % 2 == 0, "same_image": ours["image"] == theirs["image"],
                      "graphflow_seconds": ours["seconds"], "diffusers_seconds": theirs["seconds"]})
    ratio = common.summary([p["ratio"] for p in pairs])
    detail = {"setup": {"model": c.big, **args},
              "graphflow_peak_mb": common.summary([p["graphflow_peak"] / 1e6 for p in pairs]),
              "diffusers_peak_mb": common.summary([p["diffusers_peak"] / 1e6 for p in pairs]),
              "ratio_above_torch_import": common.summary([p["ratio_above_torch"] for p in pairs]),
              "same_image": all(p["same_image"] for p in pairs)}
    return row(6, "hires fix peak RSS: graphflow / diffusers pipelines (fresh processes)", ratio["median"], "ratio",
               "≤ 1.1", ratio["median"] <= 1.1, ratio, detail, pairs)


# -------------------------------------------------------------------------------------------------- row 7: server


def row_server(bench: Bench) -> dict[str, Any]:
    from bench import server_bench

    jobs = bench.config.server_jobs
    try:
        result = server_bench.measure(jobs, lambda seed: sides.txt2img(TINY, TINY_SIZE, TINY_STEPS, seed, keep=False),
                                      bench.threads, bench.models_dir, bench.scratch)
    except Exception as error:  # the server not ready / not starting: say so in the table rather than crash
        return row(7, "server: jobs over HTTP, overhead per job", None, "ms", "p50 ≤ 20 ms", False, None,
                   {"not_measured": f"{type(error).__name__}: {error}"})
    slot = result["slot_overhead"]
    detail = {k: v for k, v in result.items() if k != "per_job"}
    detail["engine_time_source"] = ("sum of node_finished seconds from /ws (GET /jobs/{id} has created/started/"
                                    "finished but no engine seconds)")
    stats = {"median": 1000 * slot["median"], "min": 1000 * slot["min"], "max": 1000 * slot["max"], "n": slot["n"]}
    met = slot["p50"] * 1000 <= 20 and not result["failed"]
    return row(7, f"server: {jobs} tiny txt2img jobs POSTed at once — p50 per-job overhead",
               1000 * slot["p50"], "ms", "p50 ≤ 20 ms", met, stats, detail, result["per_job"])


# ------------------------------------------------------------------------------------------------- row 8: scaling


def row_scaling(bench: Bench) -> dict[str, Any]:
    """Seconds per image over steps (fixed size) and over pixel count (fixed steps), round-robin over the points
    so that slow phases of the machine spread over all of them; median per point, then least squares."""
    c = bench.config
    engine = bench.engine
    points = [("steps", s, c.scale_steps_size, s) for s in c.scale_steps] + \
             [("pixels", size * size, size, c.scale_sizes_steps) for size in c.scale_sizes]
    engine.run(sides.txt2img(c.big, c.scale_sizes[-1], 1, 0, keep=True))  # warm-up at the largest size
    seconds: dict[tuple[str, int], list[float]] = {}
    for round_ in range(c.scale_rounds):
        for axis, x, size, steps in points:
            elapsed, _ = common.timed(lambda: engine.run(sides.txt2img(c.big, size, steps, 3000 + round_)))
            seconds.setdefault((axis, x), []).append(elapsed)
    fits = {}
    for axis in ("steps", "pixels"):
        xs = [x for (a, x) in seconds if a == axis]
        ys = [common.summary(seconds[(axis, x)])["median"] for x in xs]
        fits[axis] = {**common.fit_line(xs, ys), "points": [{"x": x, "seconds": y} for x, y in zip(xs, ys)]}
    steps_fit, pixels_fit = fits["steps"], fits["pixels"]
    met = steps_fit["r2"] >= 0.99 and pixels_fit["r2"] >= 0.95 and steps_fit["slope"] > 0 and pixels_fit["slope"] > 0
    detail = {"steps_fit": steps_fit, "steps_fit_size": c.scale_steps_size,
              "pixels_fit": {**pixels_fit, "slope_seconds_per_megapixel": pixels_fit["slope"] * 1e6},
              "pixels_fit_steps": c.scale_sizes_steps, "rounds": c.scale_rounds, "model": c.big}
    # a slope has no spread of its own: median/min/max stay empty; every run's seconds are in the points
    stats = {"n": sum(len(v) for v in seconds.values())}
    points = [{"axis": axis, "x": x, "seconds": [round(t, 6) for t in v], "median": common.summary(v)["median"]}
              for (axis, x), v in seconds.items()]
    return row(8, f"scaling on {c.big}: time per image against steps and pixel count (slope per step)",
               steps_fit["slope"], "s/step", "linear: R² ≥ 0.99 in steps, ≥ 0.95 in pixels", met,
               stats, detail, points)


# ---------------------------------------------------------------------------------------------- row 9: cold start


COLD_TARGET = 1.0  # seconds of graphflow's own on top of the floor


def row_cold_start(bench: Bench) -> dict[str, Any]:
    from bench import cold_start

    c = bench.config
    detail = cold_start.measure(c.cold_pairs, bench.threads, bench.scratch, warm_up=c.mode != "smoke")
    overhead = detail["overhead"]
    met = overhead["median"] <= COLD_TARGET and detail["same_image"]
    return row(9, "cold `graphflow run workflows/txt2img.json` − the floor (fresh processes): our overhead",
               overhead["median"], "s", f"≤ {COLD_TARGET:g} s", met, overhead,
               {k: v for k, v in detail.items() if k != "pairs"}, detail["pairs"])


def row_cache_scale(bench: Bench) -> dict[str, Any]:
    detail = cache_scale.measure()
    jobs = detail["jobs"]
    value = detail["value"]
    met = value <= cache_scale.FLAT and jobs["last_over_first"] <= cache_scale.FLAT_JOBS
    return row(10, "cache at 100,000 entries / at 10: put cost, and get cost against a plain dict's (worst of the "
               f"two); engine time over {jobs['jobs']} jobs", value, "ratio",
               f"≤ {cache_scale.FLAT:g}; last/first jobs ≤ {cache_scale.FLAT_JOBS:g} "
               f"(here {jobs['last_over_first']:.2f})", met, None, detail,
               [{"entries": n, **s} for n, s in detail["sizes"].items()])


def row_comfy_api(bench: Bench) -> dict[str, Any]:
    detail = comfy_api.measure(comfy_api.PAIRS[bench.config.mode], bench.threads, bench.scratch)
    extra = detail["extra_ms"]
    return row(11, "ComfyUI's POST /prompt − graphflow's POST /jobs, same toy workflow: extra time per job",
               extra["median"], "ms", f"≤ {comfy_api.TARGET_MS:g} ms", extra["median"] <= comfy_api.TARGET_MS, extra,
               {k: v for k, v in detail.items() if k != "pairs"}, detail["pairs"])


# ----------------------------------------------------------------------------------------------------- reporting


def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "not measured"
    if unit == "ratio":
        return f"{value:.3f}"
    if unit == "%":
        return f"{value:.2f} %"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "s/step":
        return f"{value * 1000:.1f} ms/step"
    return f"{value:.4g}"


def spread(r: dict[str, Any]) -> str:
    if r["unit"] == "s/step" and r["n"]:
        return f"least squares over {len(r['pairs'])} points, {r['n']} runs"
    if r["median"] is None:
        return ""
    unit = r["unit"]
    return f"{fmt(r['median'], unit)} [{fmt(r['min'], unit)}–{fmt(r['max'], unit)}], n={r['n']}"


def remark(r: dict[str, Any]) -> str:
    """The figures next to the target a reader wants first (all of them are in results.json)."""
    d = r["detail"]
    if "carried_over" in d:
        return f"(from the run of {d['carried_over']['date']}) " + remark({**r, "detail": {
            k: v for k, v in d.items() if k != "carried_over"}})
    if "not_measured" in d:
        return d["not_measured"]
    if r["id"] in (1, 2):
        m = d["model"]
        text = (f"{m['size']}×{m['size']}, {m['steps']} steps; graphflow {d['graphflow_seconds']['median']:.3f} s, "
                f"diffusers {d['diffusers_seconds']['median']:.3f} s; CPU-time ratio {d['cpu_ratio']['median']:.3f}; "
                f"engine bookkeeping {d['engine_bookkeeping_ms']['median']:.1f} ms/run")
        if "save_image" in d:
            text += f"; SaveImage (measured apart) {d['save_image']['save_ms']['median']:.1f} ms/image"
        return text
    if r["id"] == 3:
        return f"rerun {d['rerun_ms']['median']:.1f} ms; {d['setup']['first_pass']}→{d['setup']['second_pass']} px"
    if r["id"] == 4:
        return f"excess over share: median {d['excess_over_share']['median']:+.3f}"
    if r["id"] == 5:
        return (f"growth {d['growth_mb']['median']:.1f} MB of {d['weights_mb']:.1f} MB weights, of which "
                f"{d['new_cached_values_mb']['median']:.1f} MB are the second workflow's values now in the cache; "
                f"weights shared (checkpoint from the model pool, same UNet object): "
                f"{'yes' if d['weights_shared'] else 'NO'}; control, a second engine loading its own copy: "
                f"+{d['control_reload_growth_percent']['median']:.0f} %")
    if r["id"] == 6:
        return (f"peaks {d['graphflow_peak_mb']['median']:.0f} / {d['diffusers_peak_mb']['median']:.0f} MB; above "
                f"`import torch`: {d['ratio_above_torch_import']['median']:.3f}; same image: "
                f"{'yes' if d['same_image'] else 'NO'}")
    if r["id"] == 7:
        return (f"{d['jobs_per_second']:.2f} jobs/s; engine {1000 * d['engine_seconds']['median']:.0f} ms/job; "
                f"p95 {1000 * d['slot_overhead']['p95']:.1f} ms; in-run p50 {1000 * d['in_run_overhead']['p50']:.1f} ms")
    if r["id"] == 8:
        s, p = d["steps_fit"], d["pixels_fit"]
        return (f"steps at {d['steps_fit_size']} px: {1000 * s['slope']:.1f} ms/step + {1000 * s['intercept']:.0f} ms, "
                f"R² {s['r2']:.4f}; pixels at {d['pixels_fit_steps']} steps: {p['slope_seconds_per_megapixel']:.2f} s/MP "
                f"+ {1000 * p['intercept']:.0f} ms, R² {p['r2']:.4f}")
    if r["id"] == 9:
        s = d["setup"]
        return (f"{s['size']}×{s['size']}, {s['steps']} steps; graphflow {d['graphflow']['median']:.2f} s "
                f"[{d['graphflow']['min']:.2f}–{d['graphflow']['max']:.2f}], floor {d['floor']['median']:.2f} s "
                f"[{d['floor']['min']:.2f}–{d['floor']['max']:.2f}] (of which imports + loading "
                f"{d['floor_import_and_load']['median']:.2f} s); CPU-seconds overhead "
                f"{d['overhead_cpu']['median']:+.2f} [{d['overhead_cpu']['min']:+.2f}–{d['overhead_cpu']['max']:+.2f}]; "
                f"LoadCheckpoint {d['load_checkpoint']['median']:.2f} s; same image: "
                f"{'yes' if d['same_image'] else 'NO'}")
    if r["id"] == 10:
        return cache_scale.remark(d)
    if r["id"] == 11:
        return comfy_api.remark(d)
    return ""


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| # | measurement | value | target | met | median [min–max], n | remarks |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        met = "yes" if r["met"] else "**NO**"
        lines.append(f"| {r['id']} | {r['name']} | {fmt(r['value'], r['unit'])} | {r['target']} | {met} | {spread(r)} "
                     f"| {remark(r)} |")
        tiny = r["detail"].get("tiny")
        if tiny:
            lines.append(f"| {r['id']}t | … same on {TINY} ({TINY_SIZE}×{TINY_SIZE}, {TINY_STEPS} steps; reported, "
                         f"no target) | {tiny['median']:.3f} | — | — | {tiny['median']:.3f} "
                         f"[{tiny['min']:.3f}–{tiny['max']:.3f}], n={tiny['n']} | CPU-time ratio "
                         f"{tiny['cpu_ratio']['median']:.3f}; engine bookkeeping "
                         f"{tiny['engine_bookkeeping_ms']['median']:.1f} ms/run |")
    return "\n".join(lines)


def notes(config: Config, rows: list[dict[str, Any]]) -> str:
    by_id = {r["id"]: r for r in rows}
    d1 = by_id.get(1, {}).get("detail", {})
    save = d1.get("save_image", {})
    m1 = d1.get("model", {})
    lines = [
        "## What each row measures",
        "",
        f"1. `workflows/txt2img.json` ({m1.get('size')}×{m1.get('size')}, {m1.get('steps')} steps, euler_a, cfg 7.5) "
        "through `Engine.run` against `StableDiffusionPipeline` built on the very module objects the engine's "
        "LoadCheckpoint returned, same prompt, negative prompt, seed, steps and scheduler, `output_type=\"pt\"`. "
        "Both sides include tokenizing and text encoding, noise, sampling and VAE decode; pixels are asserted "
        "equal (max |diff| ≤ 1e-5) on every pair. **Like with like:** the workflow's SaveImage is replaced by "
        "`KeepImage` (bench-only output node, no PNG), since the pipeline does not encode PNGs either; SaveImage is "
        "measured on its own: " + (f"{save['save_ms']['median']:.1f} ms per image, "
                                   f"{100 * save['share_of_run']['median']:.2f} % of a run." if save else "n/a.") +
        " The engine keeps no values (`ResultCache(value_budget=0)`): every node but the checkpoint loader, "
        "whose weights live in the model pool, runs again on every run; each pair also has a new seed. The "
        "mutation guard is off (`check_mutations=False`). `engine_bookkeeping_ms` in results.json is run wall "
        "time minus the nodes' own seconds (parsing, validation, planning with fingerprints, cache look-ups).",
        "2. `workflows/img2img.json` (LoadImage → VAEEncode → denoise 0.6, euler) against "
        "`StableDiffusionImg2ImgPipeline`. The diffusers side reads the same PNG with PIL, prepares it with the "
        "pipeline's image processor and encodes it to the latent distribution's *mode* (VAEEncode's choice; the "
        "pipeline would sample it, which draws from the generator and changes every later number), then passes "
        "those latents as `image`. Pixels asserted equal as in row 1.",
        "3. `workflows/hires_fix.json` (SaveImage kept) run once on an empty value cache with the checkpoint "
        "already loaded, then again unchanged: every node comes from the cache.",
        "4. The same first run, then with only `noise2.seed` changed: AddNoise, Sample, VAEDecode and SaveImage of "
        "the second pass run again. Their share of the first run is the sum of their seconds in the first run's "
        "RunReport divided by its wall time; the target is met when the median of (rerun / first − share) ≤ 0.05.",
        "5. In a fresh process: txt2img, then img2img (another workflow) on the same checkpoint in one engine. "
        "Growth of VmRSS while the second runs, against the checkpoint's weight bytes (UNet + VAE + text "
        "encoder); the second run must also take the checkpoint from the model pool (same UNet object). Both "
        "VmRSS readings follow `gc.collect()` and glibc `malloc_trim(0)`: without the trim the figure swings by "
        "tens of MB with whatever the allocator keeps from the last activations (the untrimmed growth is in "
        "results.json). The growth includes the second workflow's intermediate values, which the engine's value "
        "cache keeps by design, and the first use of the VAE encoder (txt2img never ran it). Control: the same "
        "img2img on a second engine, which loads its own copy — what not sharing would cost.",
        "6. Peak resident memory (VmHWM) of a fresh process running the hires fix through an Engine against one "
        "running the same work with diffusers only (`StableDiffusionPipeline.from_pretrained`, output_type "
        "\"latent\", bicubic ×2, `StableDiffusionImg2ImgPipeline` from the same components, PNG saved). The "
        "processes alternate order; both produce the identical image (checked by pixel hash). Most of either "
        "peak is the imported libraries (about 1 GB with torch, transformers and diffusers), so results.json also "
        "gives the ratio of peak minus the RSS right after `import torch`.",
        "7. `python server.py` on a free 127.0.0.1 port with a temporary data dir; one warm-up job loads "
        f"{TINY}; then N txt2img jobs (64×64, 10 steps, SaveImage, a different seed each, so text encodings come "
        "from the cache) are POSTed at once with aiohttp. The job JSON has no engine seconds, so a job's engine "
        "time is the sum of its `node_finished` seconds read from `/ws`. Overhead per job = time between the "
        "previous job's finish and this one's finish − its node seconds (the server runs one job at a time); "
        "`in_run_overhead` (finished − started − node seconds) and `finished − created` (mostly queue wait) "
        "are in results.json.",
        "8. txt2img (KeepImage) through the engine over steps at a fixed size and over sizes at fixed steps; "
        "median per point; least-squares line and R². Value: seconds per step; the row name gives seconds per "
        "megapixel. Attention makes cost grow a little faster than pixel count, hence the looser R² target.",
        "9. Cold start: `graphflow run workflows/txt2img.json --out DIR` as a user types it, in a fresh process with "
        "an empty `GRAPHFLOW_CACHE_DIR`, against the floor `bench/cold_floor.py`, a fresh process that imports "
        "torch, diffusers and transformers, builds the toy-shapes UNet, VAE and CLIP text encoder with plain "
        "`from_pretrained` calls on the local folder, runs the same generation by hand (no pipeline object) and "
        "writes the PNG. Both images are compared (identical pixels). Value: median over the pairs of graphflow's "
        "process wall time minus the floor's — everything graphflow adds to the libraries' own cost (its imports, "
        "node discovery, validation, planning, loading path, engine, PNG metadata). One discarded warm-up pair "
        "first; the sides alternate; CPU seconds of both processes (from the kernel's child accounting) are in "
        "results.json, as they are less disturbed by other jobs than wall time.",
        cache_scale.NOTE,
        comfy_api.NOTE,
        "",
        f"Threads: `torch.set_num_threads` is the same for both sides (and OMP_NUM_THREADS in subprocesses). "
        f"Mode `{config.mode}`: {config.pairs} pairs on {config.big}"
        + (f", {config.tiny_pairs} on {TINY}" if config.big != TINY else "")
        + f"; hires fix {config.hires_pairs} pairs; row 5 {config.shared_runs} process(es); row 6 "
          f"{config.peak_pairs} process pair(s); row 7 {config.server_jobs} jobs."
        + (" Fewer than 5 processes in rows 5 and 6 to keep --quick near a minute; rows 1 and 2 run at "
           f"{config.size}×{config.size} with {config.steps} steps, where graphflow's fixed cost per run (engine "
           "bookkeeping, scheduler set-up, text encoding of the empty prompt) is a larger share than in the full run."
           if config.mode == "quick" else "")
        + (" Smoke mode: tiny model only, 2 pairs, rows 5 and 6 inside this process — only proves the script runs."
           if config.mode == "smoke" else ""),
    ]
    return "\n".join(lines)


def write_results(out: Path, rows: list[dict[str, Any]], meta: dict[str, Any], config: Config) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"machine": meta, "rows": rows}, indent=1, default=str) + "\n")
    m = meta
    missed = [r for r in rows if not r["met"]]
    md = [
        "# graphflow benchmarks",
        "",
        table(rows),
        "",
        ("Targets missed: " + ", ".join(f"row {r['id']}" for r in missed) + ".") if missed else "All targets met.",
        "",
        "## Machine and run",
        "",
        f"- CPU: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM; {m['platform']}",
        f"- python {m['python']}, torch {m['torch']}, diffusers {m['diffusers']}, transformers {m['transformers']}",
        f"- torch threads: {m['threads']}",
        f"- date: {m['date']}; duration {m['seconds']:.0f} s",
        f"- command: `{m['command']}`",
        f"- load average (1, 5, 15 min) at start {m['load_start']}, at end {m['load_end']} — the machine is shared "
        "with other jobs, so absolute seconds are noisy; the ratios come from alternating pairs in one process.",
        *([f"- rows {', '.join(map(str, m['carried_over']))} were not measured in this run: they are carried over "
           "from the previous results.json (each row's remark names its run's date; that run: "
           f"`{m['carried_from']['command']}`, torch {m['carried_from']['torch']}, diffusers "
           f"{m['carried_from']['diffusers']}, transformers {m['carried_from']['transformers']}, load average at "
           f"start {m['carried_from']['load_start']}, at end {m['carried_from']['load_end']})"]
          if m.get("carried_over") else []),
        "",
        notes(config, rows),
        "",
    ]
    (out / "RESULTS.md").write_text("\n".join(md))


# ---------------------------------------------------------------------------------------------------------- main


ALL_ROWS = set(range(1, 12))


def carried_over(out: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> list[dict[str, Any]]:
    """``rows`` plus the rows this run did not measure, taken from the results.json already in ``out`` (a run of
    some rows only must not erase the others); each carried row says which run it comes from."""
    try:
        previous = json.loads((out / "results.json").read_text())
    except (OSError, ValueError):
        return rows
    measured = {r["id"] for r in rows}
    origin = previous.get("machine", {})
    kept = []
    for old in previous.get("rows", []):
        if old.get("id") in measured:
            continue
        old["detail"].setdefault("carried_over", {"date": origin.get("date"), "command": origin.get("command"),
                                                  "load_start": origin.get("load_start")})
        kept.append(old)
    meta["carried_over"] = sorted(r["id"] for r in kept)
    meta["carried_from"] = origin.get("carried_from") or {
        k: origin.get(k) for k in ("date", "command", "load_start", "load_end", "torch", "diffusers", "transformers")}
    return sorted(rows + kept, key=lambda r: r["id"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="about a minute: fewer pairs, smaller sizes")
    mode.add_argument("--smoke", action="store_true", help="tiny model only, 2 pairs: proves the script runs")
    parser.add_argument("--out", type=Path, default=ROOT / "bench", help="where RESULTS.md and results.json go")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "_work", help="models, inputs, scratch")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on every side (default 1)")
    parser.add_argument("--profile", action="store_true", help="cProfile graphflow's txt2img runs into WORK/profile_txt2img.txt")
    parser.add_argument("--rows", default="1,2,3,4,5,6,7,8,9,10,11", help=argparse.SUPPRESS)  # for working on one row
    args = parser.parse_args(argv)
    config = CONFIGS["quick" if args.quick else "smoke" if args.smoke else "full"]
    wanted = {int(x) for x in args.rows.split(",")}
    if not wanted <= ALL_ROWS:
        parser.error(f"--rows: rows are numbered 1 to {max(ALL_ROWS)}")

    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    meta = {**common.machine(), "threads": args.threads, "mode": config.mode,
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.executable).name, "bench/run.py", *(argv if argv is not None else sys.argv[1:])]),
            "load_start": common.load_average()}
    if config.big == SMALL_NAME:
        small_sd_folder(args.work / "models")
    bench = Bench(config, args.work, args.threads, args.profile)

    steps: list[tuple[set[int], Callable[[], list[dict[str, Any]]]]] = [
        ({1}, lambda: [row_overhead(bench, 1, "txt2img")]),
        ({2}, lambda: [row_overhead(bench, 2, "img2img")]),
        ({3, 4}, lambda: rows_cache(bench)),
        ({5}, lambda: [row_shared_weights(bench)]),
        ({6}, lambda: [row_peak(bench)]),
        ({7}, lambda: [row_server(bench)]),
        ({8}, lambda: [row_scaling(bench)]),
        ({9}, lambda: [row_cold_start(bench)]),
        ({10}, lambda: [row_cache_scale(bench)]),
        ({11}, lambda: [row_comfy_api(bench)]),
    ]
    rows: list[dict[str, Any]] = []
    for ids, measure in steps:
        if not ids & wanted:
            continue
        print(f"rows {sorted(ids)} ...", file=sys.stderr, flush=True)
        try:
            seconds, measured = common.timed(measure)
        except Exception as error:  # one broken row must not lose the others: it is reported as not measured
            import traceback

            traceback.print_exc()
            seconds, measured = 0.0, [row(i, f"row {i}", None, "", "see the brief", False, None,
                                          {"not_measured": f"{type(error).__name__}: {error}"}) for i in sorted(ids)]
        for r in measured:
            rows.append(r)
            print(f"  {r['id']}: {fmt(r['value'], r['unit'])} (target {r['target']}) {'met' if r['met'] else 'MISSED'}",
                  file=sys.stderr, flush=True)
        print(f"  ({seconds:.1f} s, load {common.load_average()[0]})", file=sys.stderr, flush=True)
    shutil.rmtree(bench.scratch, ignore_errors=True)
    meta["load_end"] = common.load_average()
    meta["seconds"] = time.perf_counter() - started
    if wanted != ALL_ROWS:
        rows = carried_over(args.out, rows, meta)
    print(table(rows))
    write_results(args.out, rows, meta, config)
    print(f"\nwrote {args.out / 'RESULTS.md'} and {args.out / 'results.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
