"""Jobs live in SQLite under --data-dir: queued jobs and history survive a restart; a crash mid-job is recorded."""
from __future__ import annotations

import aiohttp
import pytest

from graphflow.server.store import RESTART_REASON, JobStore
from graphflow.server.worker import SHUTDOWN_REASON

from .conftest import get_job, gray_workflow, next_event, slow_workflow, submit, wait_for_status


async def test_queued_jobs_and_history_survive_a_restart(start_server, slow_steps):
    first = start_server()
    async with aiohttp.ClientSession() as session:
        done = await submit(session, first.url, gray_workflow(value=1.0))
        await wait_for_status(session, first.url, done, "succeeded")
        async with session.ws_connect(f"{first.url}/ws") as ws:
            running = await submit(session, first.url, slow_workflow())
            await next_event(ws, "progress", job=running)
        waiting = [await submit(session, first.url, gray_workflow(value=float(i))) for i in (2, 3)]
        first.stop()  # graceful: the running job is interrupted, the queued ones stay queued

        second = start_server()
        for job_id in waiting:
            job = await wait_for_status(session, second.url, job_id, "succeeded", "failed")
            assert job["status"] == "succeeded" and job["outputs"]["save"]["images"]
        interrupted = await get_job(session, second.url, running)
        assert interrupted["status"] == "failed" and interrupted["error"]["message"] == SHUTDOWN_REASON
        old = await get_job(session, second.url, done)
        assert old["status"] == "succeeded" and old["executed"] == ["x", "y", "sum", "save"]
        async with session.get(second.url + old["outputs"]["save"]["images"][0]["url"]) as response:
            assert response.status == 200  # the image is still there too
        async with session.get(f"{second.url}/jobs") as response:
            assert [job["id"] for job in (await response.json())["jobs"]] == [*waiting[::-1], running, done]


async def test_a_job_left_running_by_a_crash_is_marked_failed(start_server, data_dir):
    data_dir.mkdir(parents=True)
    store = JobStore(data_dir / "jobs.sqlite")  # what a process that died mid-job leaves behind
    crashed = store.add(gray_workflow())
    assert store.claim_next().id == crashed
    store.close()

    server = start_server()
    async with aiohttp.ClientSession() as session:
        job = await get_job(session, server.url, crashed)
        assert job["status"] == "failed" and job["finished"] is not None
        assert job["error"] == {"node": None, "type": "Interrupted", "message": RESTART_REASON}
        async with session.get(f"{server.url}/health") as response:
            assert await response.json() == {"status": "ok", "queue": 0, "running": None}


def test_two_servers_cannot_share_a_data_dir(start_server):
    start_server()
    with pytest.raises(RuntimeError, match="another graphflow server"):
        start_server()
