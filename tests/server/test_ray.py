"""The server on a real local Ray cluster: a head and two worker machines (processes on this one) with a fake
GPU each, so workers are placed by ``num_gpus``. Toy nodes keep jobs cheap; one test runs the built-in model.

Ray is the optional extra ``ray``; ``.ci/run`` installs it, so a missing Ray fails these tests loudly. To skip
them on purpose on a machine without Ray, set ``GRAPHFLOW_SKIP_RAY=1``.
"""
from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path

import aiohttp
import pytest

from graphflow.registry import Registry, default_registry
from graphflow.server.app import SERVER
from tests.engine import toynodes

from . import toyimages, toywait
from .conftest import RunningServer, get_job, gray_workflow, link, next_event, submit, wait_for_status

try:
    import ray
    from ray.cluster_utils import Cluster
except ImportError:
    if os.environ.get("GRAPHFLOW_SKIP_RAY") == "1":
        pytest.skip("Ray is not installed and GRAPHFLOW_SKIP_RAY=1", allow_module_level=True)
    pytest.fail("Ray is not installed: pip install -c constraints.txt -e '.[ray]' (or set GRAPHFLOW_SKIP_RAY=1 "
                "to skip the Ray tests on purpose)", pytrace=False)

from graphflow.server import ServerConfig
from graphflow.server.ray_pool import RayOptions

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster():
    # Ray's worker processes inherit this environment: they import graphflow and the test node modules from here.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a test cluster reports nothing anywhere
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    for _ in range(2):
        cluster.add_node(num_cpus=1, num_gpus=1)
    cluster.wait_for_nodes()
    yield cluster
    if ray.is_initialized():
        ray.shutdown()
    cluster.shutdown()


@pytest.fixture
def ray_registry() -> Registry:
    registry = Registry()
    for module in (toynodes, toyimages, toywait):
        registry.add_module(module)
    return registry


@pytest.fixture
def start_ray_server(cluster, tmp_path, ray_registry):
    """``start(workers=..., keep_workers=...)`` → a RunningServer whose jobs run on the cluster, in a namespace of
    its own; its workers are killed at the end unless kept for a restart."""
    started: list[RunningServer] = []
    namespace = f"test-{uuid.uuid4().hex[:8]}"

    def start(registry: Registry | None = None, data_dir: Path | None = None, **options) -> RunningServer:
        options = {"keep_workers": False, "worker_cpus": 0.25, **options}
        config = ServerConfig(data_dir=data_dir or tmp_path / "data",
                              ray=RayOptions(address=cluster.address, namespace=namespace, **options))
        server = RunningServer(config, registry or ray_registry)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def pool(server: RunningServer):
    return server.app[SERVER].worker.pool


def wait_for_workers(server: RunningServer, count: int, timeout: float = 90.0) -> list:
    deadline = time.monotonic() + timeout
    while len(pool(server).executors()) < count:
        assert time.monotonic() < deadline, f"only {len(pool(server).executors())} of {count} workers started"
        time.sleep(0.1)
    return pool(server).executors()


def wait_workflow(seconds: float, value: float = 1.0) -> dict:
    return {"graphflow": 1, "nodes": {
        "n": {"type": "Number", "inputs": {"value": value}},
        "wait": {"type": "Wait", "inputs": {"value": link("n"), "seconds": seconds}},
        "show": {"type": "Show", "inputs": {"value": link("wait")}},
    }}


async def started_on(ws, job_id: str) -> str:
    return (await next_event(ws, "started", job=job_id))["worker"]


def kill(server: RunningServer, worker: str) -> None:
    ray.kill(ray.get_actor(worker, namespace=pool(server).options.namespace))


# -- placement, spreading, outputs ---------------------------------------------------------------------------
@pytest.mark.timeout(120)
async def test_one_worker_per_gpu_each_on_its_own_machine_and_jobs_run_side_by_side(start_ray_server):
    server = start_ray_server()
    workers = await asyncio.to_thread(wait_for_workers, server, 2)
    described = [ray.get(w.actor.describe.remote()) for w in workers]
    assert len({d["node"] for d in described}) == 2, "the two workers share a machine"
    assert all(len(d["gpus"]) == 1 for d in described), described  # each was placed by num_gpus=1
    assert all(d["limits"] == server.app[SERVER].engine.settings.limits for d in described)  # the server's run limits
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{server.url}/ws") as ws:
            first = await submit(session, server.url, wait_workflow(1.5, value=1))
            second = await submit(session, server.url, wait_workflow(1.5, value=2))
            assert {await started_on(ws, first), await started_on(ws, second)} == {"worker-0", "worker-1"}
            jobs = [await wait_for_status(session, server.url, job, "succeeded") for job in (first, second)]
    assert [job["outputs"]["show"]["value"] for job in jobs] == [1, 2]
    assert jobs[1]["started"] < jobs[0]["finished"], "the second job waited for the first"


@pytest.mark.timeout(120)
async def test_files_a_worker_writes_come_back_into_the_servers_outputs(start_ray_server, tmp_path):
    server = start_ray_server()
    await asyncio.to_thread(wait_for_workers, server, 2)
    async with aiohttp.ClientSession() as session:
        jobs = [await submit(session, server.url, gray_workflow(value=level, width=12, height=6)) for level in (3, 4)]
        for job_id, level in zip(jobs, (3, 4)):
            job = await wait_for_status(session, server.url, job_id, "succeeded")
            [image] = job["outputs"]["save"]["images"]
            async with session.get(server.url + image["url"]) as response:
                assert response.status == 200
                png = await response.read()
            assert png == toyimages.png_bytes(12, 6, level + 2)
    assert len(list((tmp_path / "data" / "outputs").glob("gray-*.png"))) == 2


# -- routing by cache affinity ---------------------------------------------------------------------------------
@pytest.mark.timeout(120)
async def test_a_job_goes_to_the_idle_worker_that_cached_the_start_of_its_plan(start_ray_server):
    server = start_ray_server()
    await asyncio.to_thread(wait_for_workers, server, 2)
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{server.url}/ws") as ws:
            first = await submit(session, server.url, gray_workflow(value=5.0, bias=0))
            home = await started_on(ws, first)
            await wait_for_status(session, server.url, first, "succeeded")
            # least loaded would be the other worker; affinity wins: x and y are cached where the first job ran
            for bias in (2, 4):
                again = await submit(session, server.url, gray_workflow(value=5.0, bias=bias))
                assert await started_on(ws, again) == home
                job = await wait_for_status(session, server.url, again, "succeeded")
                assert job["cached"] == ["x", "y"] and job["executed"] == ["sum", "save"]
            # a plan that no cache holds goes to the least loaded worker
            other = await submit(session, server.url, wait_workflow(0.0, value=9.0))
            assert await started_on(ws, other) != home


# -- faults ----------------------------------------------------------------------------------------------------
@pytest.mark.timeout(180)
async def test_a_killed_workers_job_runs_again_on_another_and_a_second_loss_fails_it_naming_both(start_ray_server):
    server = start_ray_server()
    await asyncio.to_thread(wait_for_workers, server, 2)
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{server.url}/ws") as ws:
            job_id = await submit(session, server.url, wait_workflow(2.0, value=7))
            victim = await started_on(ws, job_id)
            await next_event(ws, "progress", job=job_id)
            kill(server, victim)
            warning = await next_event(ws, "warning", job=job_id)
            assert warning["message"].startswith(f"{victim} (") and "runs again on worker-" in warning["message"]
            job = await wait_for_status(session, server.url, job_id, "succeeded", "failed")
            assert job["status"] == "succeeded" and job["outputs"]["show"]["value"] == 7

            await asyncio.to_thread(wait_for_workers, server, 2)  # the killed one was replaced
            doomed = await submit(session, server.url, wait_workflow(3.0))
            first = await started_on(ws, doomed)
            await next_event(ws, "progress", job=doomed)
            kill(server, first)
            second = (await next_event(ws, "warning", job=doomed))["message"].rsplit(" ", 1)[-1]
            await next_event(ws, "progress", job=doomed)
            kill(server, second)
            job = await wait_for_status(session, server.url, doomed, "succeeded", "failed")
    assert job["status"] == "failed" and job["error"]["type"] == "WorkerLost"
    assert job["error"]["message"].startswith(f"{second} (") and f"retry after {first} (" in job["error"]["message"]
    assert job["outputs"] == {}


@pytest.mark.timeout(120)
async def test_cancelling_a_job_stops_it_on_its_worker(start_ray_server):
    server = start_ray_server()
    await asyncio.to_thread(wait_for_workers, server, 2)
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{server.url}/ws") as ws:
            job_id = await submit(session, server.url, wait_workflow(60.0))
            await next_event(ws, "progress", job=job_id)
            async with session.delete(f"{server.url}/jobs/{job_id}") as response:
                assert response.status == 202 and (await response.json())["cancelling"] is True
            await next_event(ws, "cancelled", job=job_id)
        job = await get_job(session, server.url, job_id)
    assert job["status"] == "cancelled" and job["progress"]["value"] < job["progress"]["max"]


@pytest.mark.timeout(180)
async def test_a_machine_joining_brings_a_worker_that_takes_jobs_and_its_loss_moves_its_job(start_ray_server, cluster):
    server = start_ray_server()
    await asyncio.to_thread(wait_for_workers, server, 2)
    joined = cluster.add_node(num_cpus=1, num_gpus=1)
    try:
        await asyncio.to_thread(wait_for_workers, server, 3)  # worker-2: the only free GPU was the new machine's
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{server.url}/ws") as ws:
                jobs = [await submit(session, server.url, wait_workflow(2.0, value=i)) for i in range(3)]
                where = {await started_on(ws, job): job for job in jobs}
                assert set(where) == {"worker-0", "worker-1", "worker-2"}
                await next_event(ws, "progress", job=where["worker-2"])
                cluster.remove_node(joined)  # the machine goes, mid-job
                joined = None
                warning = await next_event(ws, "warning", job=where["worker-2"])
                assert warning["message"].startswith("worker-2 (")
                finished = [await wait_for_status(session, server.url, job, "succeeded", "failed") for job in jobs]
        assert [job["status"] for job in finished] == ["succeeded"] * 3
        assert [job["outputs"]["show"]["value"] for job in finished] == [0, 1, 2]
    finally:
        if joined is not None:
            cluster.remove_node(joined)


@pytest.mark.timeout(180)
async def test_a_restarted_server_reattaches_to_its_workers_and_their_warm_caches(start_ray_server, tmp_path):
    data_dir = tmp_path / "restart"
    server = start_ray_server(data_dir=data_dir, keep_workers=True)
    before = {w.ident for w in await asyncio.to_thread(wait_for_workers, server, 2)}
    async with aiohttp.ClientSession() as session:
        first = await submit(session, server.url, gray_workflow(value=11.0))
        await wait_for_status(session, server.url, first, "succeeded")
    await asyncio.to_thread(server.stop)

    again = start_ray_server(data_dir=data_dir)  # same namespace; this one kills the workers at the end
    assert {w.ident for w in await asyncio.to_thread(wait_for_workers, again, 2)} == before
    async with aiohttp.ClientSession() as session:
        assert (await get_job(session, again.url, first))["status"] == "succeeded"  # the history is kept
        second = await submit(session, again.url, gray_workflow(value=11.0, bias=2))
        job = await wait_for_status(session, again.url, second, "succeeded")
    assert job["cached"] == ["x", "y"]


# -- volume ----------------------------------------------------------------------------------------------------
@pytest.mark.timeout(300)
async def test_two_hundred_jobs_each_run_exactly_once_through_a_worker_loss(start_ray_server):
    server = start_ray_server()
    await asyncio.to_thread(wait_for_workers, server, 2)
    started: list[str] = []
    finished: dict[str, dict] = {}
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{server.url}/ws", max_msg_size=0) as ws:
            jobs = {}
            for value in range(200):
                workflow = wait_workflow(0.0, value=value) if value != 60 else wait_workflow(1.5, value=value)
                jobs[await submit(session, server.url, workflow)] = value
            killed = False
            while len(finished) < len(jobs):
                event = await next_event(ws, "started", "progress", "succeeded", "failed", "cancelled")
                if event["type"] == "started":
                    started.append(event["job"])
                    if jobs[event["job"]] == 60:
                        slow_worker = event["worker"]
                elif event["type"] == "progress":
                    if jobs[event["job"]] == 60 and not killed and event["value"] > 5:
                        kill(server, slow_worker)  # mid-job, with jobs still queued behind it
                        killed = True
                else:
                    assert event["job"] not in finished, "a job finished twice"
                    finished[event["job"]] = event
            history = [await get_job(session, server.url, job) for job in jobs]
    assert killed
    assert sorted(started) == sorted(jobs), "a job was lost or started twice"
    assert {event["type"] for event in finished.values()} == {"succeeded"}
    assert all(job["status"] == "succeeded" and job["outputs"]["show"]["value"] == jobs[job["id"]] for job in history)


# -- the built-in model ----------------------------------------------------------------------------------------
TXT2IMG = ROOT / "workflows" / "txt2img.json"


@pytest.mark.timeout(300)
async def test_txt2img_on_the_built_in_model_runs_on_a_worker_and_the_next_prompt_reuses_its_checkpoint(start_ray_server):
    import json

    workflow = json.loads(TXT2IMG.read_text())
    workflow["nodes"]["schedule"]["inputs"]["steps"] = 2
    server = start_ray_server(registry=default_registry(), workers=1)
    await asyncio.to_thread(wait_for_workers, server, 1, 180.0)
    async with aiohttp.ClientSession() as session:
        first = await wait_for_status(session, server.url, await submit(session, server.url, workflow), "succeeded", "failed")
        assert first["status"] == "succeeded", first["error"]
        [image] = first["outputs"]["save"]["images"]
        async with session.get(server.url + image["url"]) as response:
            assert response.status == 200 and response.content_type == "image/png"
        workflow["nodes"]["positive"]["inputs"]["text"] = "a blue square on a white background"
        second = await wait_for_status(session, server.url, await submit(session, server.url, workflow), "succeeded", "failed")
    assert second["status"] == "succeeded", second["error"]
    assert "ckpt" in second["cached"] and "positive" in second["executed"]
    # the worker numbers its files in a folder of its own; on the server the counter continues
    assert image["url"] == "/outputs/txt2img_00001.png"
    assert second["outputs"]["save"]["images"][0]["url"] == "/outputs/txt2img_00002.png"


# -- the command line ------------------------------------------------------------------------------------------
@pytest.mark.timeout(180)
def test_graphflow_serve_ray_starts_its_own_ray_runs_a_job_and_stops_on_ctrl_c(tmp_path):
    import json
    import signal
    import socket
    import subprocess
    import sys
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}  # not the test cluster's
    env.update(RAY_USAGE_STATS_ENABLED="0", GRAPHFLOW_NODES="tests.engine.toynodes", GRAPHFLOW_TOKEN="", PYTHONPATH=os.environ["PYTHONPATH"]
               if "PYTHONPATH" in os.environ else str(ROOT))
    process = subprocess.Popen([sys.executable, "-m", "graphflow", "serve", "--ray", "--workers", "1", "--worker-cpus", "0.5",
                                "--port", str(port), "--data-dir", str(tmp_path / "d")],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"

    def call(path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url + path, data, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.load(response)

    try:
        for _ in range(600):
            try:
                call("/health")
                break
            except OSError:
                assert process.poll() is None, process.stderr.read()
                time.sleep(0.1)
        workflow = {"graphflow": 1, "nodes": {"n": {"type": "Number", "inputs": {"value": 6}},
                                              "show": {"type": "Show", "inputs": {"value": link("n")}}}}
        job_id = call("/jobs", {"workflow": workflow})["id"]
        for _ in range(1200):
            job = call(f"/jobs/{job_id}")
            if job["status"] not in ("queued", "running"):
                break
            time.sleep(0.1)
        assert job["status"] == "succeeded" and job["outputs"]["show"]["value"] == 6, job
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "jobs run on Ray workers (a Ray started here, namespace graphflow)" in stderr and "Traceback" not in stderr
