"""Row 11: what ComfyUI's API (``POST /prompt``) costs a job on top of graphflow's own (``POST /jobs``).

One ``python server.py`` serves both APIs over the toy ComfyUI nodes of ``tests/server/comfytoys.py`` (pure Python,
a few microseconds each), so a job's time is the API's and the server's alone. Each pair submits the same
3-node workflow both ways, the sides alternating (A B, B A, ...), with a new input value per pair so that no node
comes from the cache. A side is timed as a client sees it: submit, wait for the end on the WebSocket, read the
result (``/prompt``: its ComfyUI WebSocket ``/ws?clientId=``, ``executing`` with ``node: null``, then
``GET /history/{id}``; ``/jobs``: graphflow's ``/ws``, the terminal event, then ``GET /jobs/{id}``).
(``bench/comfy_convert.py`` times the conversions of ComfyUI's workflows themselves.)
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import summary
from bench.server_bench import TERMINAL, ServerProcess

ROOT = Path(__file__).resolve().parents[1]
TOY_PACK = "nodes.comfy,tests.server.comfytoys"
PAIRS = {"full": 41, "quick": 15, "smoke": 3}
TARGET_MS = 5.0  # what POST /prompt may add to a job, over POST /jobs
NOTE = ("11. ComfyUI's API against graphflow's own on one `python server.py` (the toy ComfyUI nodes of "
        "`tests/server/comfytoys.py`, microseconds of work each, so the figure is the APIs' alone): pairs of the "
        "same 3-node workflow, sent as an API prompt to `POST /prompt` and as a graphflow workflow to `POST /jobs`, "
        "the sides alternating and every pair with a new input value (nothing cached). Each side as a client sees "
        "it: submit, wait for the end on the WebSocket (`executing` with `node: null` on `/ws?clientId=`; the "
        "terminal event on `/ws`), read the result (`GET /history/{id}`; `GET /jobs/{id}`). Value: median of "
        "(/prompt − /jobs) per pair; two warm-up pairs are discarded. The conversion of ComfyUI's workflows: "
        "`bench/comfy_convert.py`.")


def remark(detail: dict[str, Any]) -> str:
    p, j = detail["prompt_ms"], detail["jobs_ms"]
    return (f"submit → done → result: /prompt {p['median']:.1f} ms [{p['min']:.1f}–{p['max']:.1f}], /jobs "
            f"{j['median']:.1f} ms [{j['min']:.1f}–{j['max']:.1f}]; POST alone {detail['submit_ms']['prompt']['median']:.1f}"
            f" / {detail['submit_ms']['jobs']['median']:.1f} ms")


def measure(pairs: int, threads: int, scratch: Path) -> dict[str, Any]:
    from tests.server import comfytoys

    env = {**os.environ, "GRAPHFLOW_NODES": TOY_PACK, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("GRAPHFLOW_TOKEN", None)
    server = ServerProcess(scratch, [], env, prefix="comfy-api-")
    try:
        timings = asyncio.run(_pairs(server, pairs, comfytoys.prompt))
    finally:
        server.stop()
    prompt_ms = [1000 * t for t in timings["prompt"]]
    jobs_ms = [1000 * t for t in timings["jobs"]]
    return {"extra_ms": summary([p - j for p, j in zip(prompt_ms, jobs_ms)]), "prompt_ms": summary(prompt_ms),
            "jobs_ms": summary(jobs_ms), "submit_ms": {k: summary([1000 * t for t in v]) for k, v in timings["submit"].items()},
            "pairs": [{"prompt_ms": round(p, 3), "jobs_ms": round(j, 3)} for p, j in zip(prompt_ms, jobs_ms)]}


async def _pairs(server: ServerProcess, pairs: int, prompt_of) -> dict[str, Any]:
    import aiohttp

    async with aiohttp.ClientSession(server.url) as http:
        await server.wait_ready(http)
        async with http.ws_connect("/ws?clientId=bench") as comfy_ws, http.ws_connect("/ws") as graphflow_ws:
            await comfy_ws.receive()  # the greeting status
            result: dict[str, Any] = {"prompt": [], "jobs": [], "submit": {"prompt": [], "jobs": []}}
            for index in range(-2, pairs):  # two warm-up pairs: first requests pay one-time costs on both sides
                prompt = prompt_of(value=float(index % 500), steps=1)
                sides = [("prompt", _via_prompt), ("jobs", _via_jobs)]
                for name, side in sides if index % 2 == 0 else reversed(sides):
                    socket = comfy_ws if name == "prompt" else graphflow_ws
                    total, submit = await side(http, socket, prompt)
                    if index >= 0:
                        result[name].append(total)
                        result["submit"][name].append(submit)
            return result


async def _via_prompt(http, ws, prompt: dict) -> tuple[float, float]:
    started = time.perf_counter()
    async with http.post("/prompt", json={"prompt": prompt, "client_id": "bench"}) as response:
        prompt_id = (await response.json())["prompt_id"]
    submitted = time.perf_counter()
    async for message in ws:
        if message.type == 1:  # text; previews would be binary
            event = json.loads(message.data)
            if event["type"] == "executing" and event["data"]["node"] is None and event["data"]["prompt_id"] == prompt_id:
                break
    async with http.get(f"/history/{prompt_id}") as response:
        entry = (await response.json())[prompt_id]
    assert entry["status"]["completed"], entry["status"]
    return time.perf_counter() - started, submitted - started


async def _via_jobs(http, ws, prompt: dict) -> tuple[float, float]:
    from graphflow.documents import read_document
    from tests.server import comfytoys

    workflow = read_document(prompt, "prompt", comfytoys.registry()).to_json()  # the same nodes, in graphflow's format
    started = time.perf_counter()
    async with http.post("/jobs", json={"workflow": workflow}) as response:
        job_id = (await response.json())["id"]
    submitted = time.perf_counter()
    async for message in ws:
        event = json.loads(message.data)
        if event.get("job") == job_id and event["type"] in TERMINAL:
            break
    async with http.get(f"/jobs/{job_id}") as response:
        job = await response.json()
    assert job["status"] == "succeeded", job
    return time.perf_counter() - started, submitted - started


if __name__ == "__main__":  # python -m bench.comfy_api [PAIRS]: a quick look without the rest of the bench
    result = measure(int(sys.argv[1]) if len(sys.argv) > 1 else 20, 1, Path(tempfile.mkdtemp(prefix="comfy-bench-")))
    print(json.dumps({k: v for k, v in result.items() if k != "pairs"}, indent=1))
