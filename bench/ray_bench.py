"""The Ray worker pool against the in-process server: jobs/minute with 1 and 2 workers, dispatch overhead per job.

    python -m bench.ray_bench            # about 3 minutes; writes bench/RAY_RESULTS.md and bench/ray_results.json
    python -m bench.ray_bench --smoke    # seconds of work (keeps the script working; numbers mean little)

Each setup is a real ``server.py`` subprocess (in-process worker; ``--ray --workers 1``; ``--ray --workers 2``, each
starting its own local Ray) taking the same three workloads, each a batch of jobs POSTed at once after one warm-up
job per worker (which loads the checkpoint into every worker's model pool):

* ``sleep``: Number → Wait(0.25 s) → Show — wall time without CPU, so the pool's parallelism shows undiluted;
* ``txt2img``: the built-in model at 64×64, 4 steps, one seed per job — CPU-bound: on a 2-core machine shared
  with other jobs two workers cannot double it;
* ``noop``: Number → Show, no work: (finished − started) − the job's node seconds is the dispatch overhead per
  job (claim, routing, the Ray call and its event stream, recording the result).
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.server_bench import TERMINAL, ServerProcess, percentile  # noqa: E402

NODES = "nodes,tests.engine.toynodes,tests.server.toywait"
SETUPS = {"in-process": [], "Ray, 1 worker": ["--ray", "--workers", "1", "--worker-cpus", "0.5"],
          "Ray, 2 workers": ["--ray", "--workers", "2", "--worker-cpus", "0.5"]}


def link(node: str, output: str = "value") -> dict:
    return {"from": node, "output": output}


def sleep_job(i: int) -> dict:
    return {"graphflow": 1, "nodes": {"n": {"type": "Number", "inputs": {"value": i}},
                                      "wait": {"type": "Wait", "inputs": {"value": link("n"), "seconds": 0.25}},
                                      "show": {"type": "Show", "inputs": {"value": link("wait")}}}}


def noop_job(i: int) -> dict:
    return {"graphflow": 1, "nodes": {"n": {"type": "Number", "inputs": {"value": i}},
                                      "show": {"type": "Show", "inputs": {"value": link("n")}}}}


def txt2img_job(i: int) -> dict:
    workflow = json.loads((ROOT / "workflows" / "txt2img.json").read_text())
    workflow["nodes"]["schedule"]["inputs"]["steps"] = 4
    workflow["nodes"]["noise"]["inputs"]["seed"] = 1000 + i
    return workflow


WORKLOADS = {"sleep": sleep_job, "txt2img": txt2img_job, "noop": noop_job}


def start_server(extra: list[str], scratch: Path) -> ServerProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    env.update(RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", GRAPHFLOW_CHECK_MUTATIONS="0", HF_HUB_OFFLINE="1",
               GRAPHFLOW_NODES=NODES, GRAPHFLOW_TOKEN="",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return ServerProcess(scratch, ["--max-queued", "100000", *extra], env, prefix="ray-bench-")


async def batch(http, ws_events: dict[str, list[dict]], workflows: list[dict]) -> tuple[list[str], float]:
    """POST every workflow at once; (job ids, seconds from the first POST to the last terminal event)."""
    started = time.perf_counter()

    async def post(workflow: dict) -> str:
        async with http.post("/jobs", json={"workflow": workflow}) as response:
            answer = await response.json()
            if response.status != 202:
                raise RuntimeError(f"job refused ({response.status}): {answer}")
            return answer["id"]

    ids = await asyncio.gather(*(post(w) for w in workflows))
    while not all(any(e["type"] in TERMINAL for e in ws_events.get(i, ())) for i in ids):
        await asyncio.sleep(0.005)
    return ids, time.perf_counter() - started


async def measure_setup(extra: list[str], workers: int, sizes: dict[str, int], scratch: Path) -> dict[str, Any]:
    import aiohttp

    server = start_server(extra, scratch)
    try:
        async with aiohttp.ClientSession(server.url) as http:
            await server.wait_ready(http, timeout=300)  # a Ray cluster starts first
            events: dict[str, list[dict]] = {}
            async with http.ws_connect("/ws", max_msg_size=0) as ws:
                async def listen() -> None:
                    async for message in ws:
                        event = message.json()
                        events.setdefault(event.get("job"), []).append(event)

                listener = asyncio.create_task(listen())
                results: dict[str, Any] = {}
                for name, make in WORKLOADS.items():
                    await batch(http, events, [make(-1 - k) for k in range(workers)])  # warm-up: one per worker
                    ids, elapsed = await batch(http, events, [make(k) for k in range(sizes[name])])
                    jobs = []
                    for job_id in ids:
                        async with http.get(f"/jobs/{job_id}") as response:
                            jobs.append(await response.json())
                    failed = [j["id"] for j in jobs if j["status"] != "succeeded"]
                    if failed:
                        raise RuntimeError(f"{len(failed)} {name} job(s) failed: {jobs[0]['error']}")
                    node_seconds = [sum(e["seconds"] for e in events[j["id"]] if e["type"] == "node_finished") for j in jobs]
                    overhead = [(j["finished"] - j["started"]) - s for j, s in zip(jobs, node_seconds)]
                    workers_used = {e.get("worker") for j in jobs for e in events[j["id"]] if e["type"] == "started"}
                    results[name] = {"jobs": len(jobs), "seconds": elapsed, "jobs_per_minute": 60 * len(jobs) / elapsed,
                                     "overhead_ms_p50": 1000 * percentile(overhead, 50),
                                     "overhead_ms_p95": 1000 * percentile(overhead, 95),
                                     "engine_ms_median": 1000 * statistics.median(node_seconds),
                                     "workers_used": len(workers_used)}
                listener.cancel()
        return results
    finally:
        server.stop(timeout=60)


def table(results: dict[str, dict[str, Any]]) -> str:
    setups = list(results)
    lines = ["| workload | " + " | ".join(setups) + " |", "|---|" + "---|" * len(setups)]
    for name in WORKLOADS:
        cells = [f"{results[s][name]['jobs_per_minute']:.0f} jobs/min" for s in setups]
        lines.append(f"| {name} ({results[setups[0]][name]['jobs']} jobs) | " + " | ".join(cells) + " |")
    cells = [f"{results[s]['noop']['overhead_ms_p50']:.1f} ms (p95 {results[s]['noop']['overhead_ms_p95']:.1f})" for s in setups]
    lines.append("| dispatch overhead per job, p50 (noop) | " + " | ".join(cells) + " |")
    cells = [f"{results[s]['txt2img']['overhead_ms_p50']:.1f} ms" for s in setups]
    lines.append("| overhead per txt2img job, p50 (incl. the PNG's bytes) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few jobs per workload")
    parser.add_argument("--out", type=Path, default=ROOT / "bench", help="where RAY_RESULTS.md and ray_results.json go")
    args = parser.parse_args(argv)
    sizes = {"sleep": 4, "txt2img": 2, "noop": 4} if args.smoke else {"sleep": 40, "txt2img": 12, "noop": 60}
    scratch = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    load_before = os.getloadavg()
    began = time.perf_counter()
    results = {setup: asyncio.run(measure_setup(extra, 2 if "2" in setup else 1, sizes, scratch))
               for setup, extra in SETUPS.items()}
    duration = time.perf_counter() - began
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": platform.python_version(),
               "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "command": "python -m bench.ray_bench" + (" --smoke" if args.smoke else ""), "seconds": round(duration)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ray_results.json").write_text(json.dumps({"machine": machine, "results": results}, indent=1) + "\n")
    text = table(results)
    (args.out / "RAY_RESULTS.md").write_text(
        "# graphflow on Ray: throughput and dispatch overhead\n\n" + text + "\n\n"
        f"- {machine['cores']} cores, python {machine['python']}; {machine['date']}; {machine['seconds']} s; "
        f"`{machine['command']}`\n- load average (1, 5, 15 min) before {machine['load_before']}, after "
        f"{machine['load_after']}: the machine is shared, absolute figures are noisy\n- what each workload is: "
        "the docstring of bench/ray_bench.py\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
