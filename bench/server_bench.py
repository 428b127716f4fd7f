"""Row 7: the real HTTP server in a subprocess, N tiny txt2img jobs submitted at once over loopback.

The job JSON (GET /jobs/{id}) has created / started / finished times but no engine time, so the engine time of a
job is the sum of its ``node_finished`` seconds, collected from the WebSocket (``/ws`` without ``?job=``: every
job's events). Per job we get:

* ``in_run`` overhead  = (finished − started) − node seconds: validation, planning, cache look-ups, event
  publishing and the store's writes around one run;
* ``slot`` overhead    = (finished − previous job's finished) − node seconds: the same plus everything the server
  does between two jobs (claiming the next one, answering the burst of submissions meanwhile). Jobs run one at a
  time, so the slots add up to the whole batch; this is the figure the target applies to;
* finished − created (includes waiting in the queue behind the other jobs: reported, not an overhead).
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import summary

ROOT = Path(__file__).resolve().parents[1]
TERMINAL = ("succeeded", "failed", "cancelled")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class ServerProcess:
    """``python server.py ARGS`` on a free 127.0.0.1 port with a temporary data directory (named ``prefix``...) in
    ``scratch`` and its log there, until ``stop()``: the one server launcher of every bench that drives one."""

    def __init__(self, scratch: Path, args: list[str], env: dict[str, str], prefix: str = "server-"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = Path(tempfile.mkdtemp(prefix=prefix, dir=scratch))
        self.log = open(self.data_dir / "server.log", "w")
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "server.py"), "--port", str(self.port), "--data-dir", str(self.data_dir), *args],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    async def wait_ready(self, http, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}; see {self.data_dir / 'server.log'}")
            try:
                async with http.get("/health") as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            await asyncio.sleep(0.2)
        raise RuntimeError(f"server not answering /health after {timeout:.0f} s")

    def stop(self, timeout: float = 30) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


async def submit(http, workflow: dict) -> str:
    async with http.post("/jobs", json={"workflow": workflow}) as response:
        answer = await response.json()
        if response.status != 202:
            raise RuntimeError(f"job refused ({response.status}): {answer}")
        return answer["id"]


async def run_jobs(url: str, workflows: list[dict]) -> dict[str, Any]:
    import aiohttp

    node_seconds: dict[str, float] = {}
    ended: dict[str, str] = {}
    all_ended = asyncio.Event()
    expected: set[str] = set()
    async with aiohttp.ClientSession(url) as http:
        # warm-up job: loads the checkpoint, so the measured jobs all find it in the model pool
        warm_id = await submit(http, workflows[0])
        async with http.ws_connect(f"/ws?job={warm_id}") as ws:
            async for message in ws:
                event = message.json()
                if event["type"] in TERMINAL or (event["type"] == "status" and event["status"] in TERMINAL):
                    break
        async with http.ws_connect("/ws") as ws:
            async def listen() -> None:
                async for message in ws:
                    event = message.json()
                    job = event.get("job")
                    if event["type"] == "node_finished":
                        node_seconds[job] = node_seconds.get(job, 0.0) + event["seconds"]
                    elif event["type"] in TERMINAL:
                        ended[job] = event["type"]
                        if expected and expected <= ended.keys():
                            all_ended.set()

            listener = asyncio.create_task(listen())
            started = time.perf_counter()
            ids = await asyncio.gather(*(submit(http, w) for w in workflows[1:]))
            submitted = time.perf_counter() - started
            expected.update(ids)
            if expected <= ended.keys():
                all_ended.set()
            await all_ended.wait()
            elapsed = time.perf_counter() - started
            listener.cancel()
        jobs = []
        for job_id in ids:
            async with http.get(f"/jobs/{job_id}") as response:
                jobs.append(await response.json())
    return {"jobs": jobs, "node_seconds": node_seconds, "elapsed": elapsed, "submit_seconds": submitted}


def analyse(result: dict[str, Any]) -> dict[str, Any]:
    jobs = sorted(result["jobs"], key=lambda j: j["started"])
    failed = [j["id"] for j in jobs if j["status"] != "succeeded"]
    engine = [result["node_seconds"].get(j["id"], 0.0) for j in jobs]
    in_run = [(j["finished"] - j["started"]) - e for j, e in zip(jobs, engine)]
    slot = [(jobs[k]["finished"] - jobs[k - 1]["finished"]) - engine[k] for k in range(1, len(jobs))]
    waited = [j["finished"] - j["created"] for j in jobs]
    n = len(jobs)
    return {
        "jobs": n,
        "failed": failed,
        "jobs_per_second": n / result["elapsed"],
        "elapsed_seconds": result["elapsed"],
        "submit_seconds": result["submit_seconds"],
        "engine_seconds": summary(engine),
        "slot_overhead": {**summary(slot), "p50": percentile(slot, 50), "p95": percentile(slot, 95)},
        "in_run_overhead": {**summary(in_run), "p50": percentile(in_run, 50), "p95": percentile(in_run, 95)},
        "finished_minus_created": {"p50": percentile(waited, 50), "p95": percentile(waited, 95)},
        "per_job": [{"id": j["id"], "created": j["created"], "started": j["started"], "finished": j["finished"],
                     "engine": round(e, 6), "cached": j.get("cached")} for j, e in zip(jobs, engine)],
    }


def measure(jobs: int, workflow_for_seed, threads: int, models_dir: Path, scratch: Path) -> dict[str, Any]:
    """Start the server (data directory inside ``scratch``), run ``jobs`` jobs plus one warm-up, stop it; the
    analysed timings."""
    import aiohttp

    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "GRAPHFLOW_CHECK_MUTATIONS": "0", "HF_HUB_OFFLINE": "1"}
    env.pop("GRAPHFLOW_TOKEN", None)
    server = ServerProcess(scratch, ["--models-dir", str(models_dir), "--max-queued", "100000"], env)

    async def go() -> dict[str, Any]:
        async with aiohttp.ClientSession(server.url) as http:
            await server.wait_ready(http)
        return await run_jobs(server.url, [workflow_for_seed(seed) for seed in range(jobs + 1)])

    try:
        return analyse(asyncio.run(go()))
    finally:
        server.stop()


if __name__ == "__main__":  # python -m bench.server_bench N: a quick look without the rest of the bench
    from bench import sides

    scratch = Path(tempfile.mkdtemp(prefix="server-bench-"))
    result = measure(int(sys.argv[1]) if len(sys.argv) > 1 else 10, lambda s: sides.txt2img("tiny-sd", 64, 10, s, keep=False),
                     1, ROOT / "bench" / "_work" / "models", scratch)
    print(json.dumps({k: v for k, v in result.items() if k != "per_job"}, indent=1))
