"""Submitting, running, following, cancelling jobs (toy nodes, real server, real HTTP and WebSocket client)."""
from __future__ import annotations

import asyncio
import io

import aiohttp
from PIL import Image

from tests.engine import toynodes

from .conftest import get_job, gray_workflow, link, next_event, slow_workflow, submit, wait_for_status


async def test_job_runs_and_its_events_and_image_can_be_followed(server):
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{server.url}/ws") as ws:
            job_id = await submit(session, server.url, gray_workflow(value=3.0, width=24, height=10))
            seen = []
            while not seen or seen[-1]["type"] not in ("succeeded", "failed"):
                seen.append(await next_event(ws, "queued", "started", "node_started", "node_finished", "succeeded", "failed"))
        assert all(event["job"] == job_id for event in seen)
        types = [event["type"] for event in seen]
        assert types[:2] == ["queued", "started"] and types[-1] == "succeeded"
        assert [e["node"] for e in seen if e["type"] == "node_finished"] == ["x", "y", "sum", "save"]

        job = await get_job(session, server.url, job_id)
        assert job["status"] == "succeeded" and job["error"] is None
        assert job["executed"] == ["x", "y", "sum", "save"] and job["cached"] == []
        assert job["created"] <= job["started"] <= job["finished"]
        [image] = job["outputs"]["save"]["images"]
        assert image["url"].startswith("/outputs/") and (image["width"], image["height"]) == (24, 10)
        assert seen[-1]["outputs"] == job["outputs"]

        async with session.get(server.url + image["url"]) as response:
            assert response.status == 200 and response.content_type == "image/png"
            png = await response.read()
        with Image.open(io.BytesIO(png)) as picture:
            assert picture.format == "PNG" and picture.size == (24, 10)
            assert picture.getpixel((0, 0)) == (5, 5, 5)  # 3 + 2


async def test_resubmitting_with_one_changed_literal_runs_only_what_it_affects(server):
    async with aiohttp.ClientSession() as session:
        first = await submit(session, server.url, gray_workflow(value=1.0, bias=0))
        await wait_for_status(session, server.url, first, "succeeded")
        second = await submit(session, server.url, gray_workflow(value=1.0, bias=2))
        job = await wait_for_status(session, server.url, second, "succeeded")
    assert job["cached"] == ["x", "y"]
    assert job["executed"] == ["sum", "save"]


async def test_ws_job_filter_starts_with_a_status_snapshot_and_sends_only_that_job(server):
    async with aiohttp.ClientSession() as session:
        done = await submit(session, server.url, gray_workflow(value=7.0))
        await wait_for_status(session, server.url, done, "succeeded")
        async with session.ws_connect(f"{server.url}/ws?job={done}") as ws:
            snapshot = await next_event(ws, "status")
            assert snapshot["job"] == done and snapshot["status"] == "succeeded"
            assert snapshot["outputs"]["save"]["images"][0]["url"].startswith("/outputs/")
            other = await submit(session, server.url, gray_workflow(value=8.0))
            await wait_for_status(session, server.url, other, "succeeded")
            try:
                message = await ws.receive(timeout=0.3)
            except asyncio.TimeoutError:
                message = None
            assert message is None, "an event of another job leaked through the filter"


async def test_progress_is_streamed_and_shown_by_get_while_running(server, slow_steps):
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{server.url}/ws") as ws:
            job_id = await submit(session, server.url, slow_workflow())
            event = await next_event(ws, "progress", job=job_id)
            assert event["node"] == "slow" and event["max"] == 200 and event["value"] >= 1
            job = await get_job(session, server.url, job_id)
            assert job["status"] == "running"
            assert job["progress"]["node"] == "slow" and job["progress"]["max"] == 200
            async with session.get(f"{server.url}/health") as response:
                assert await response.json() == {"status": "ok", "queue": 0, "running": job_id}
            async with session.delete(f"{server.url}/jobs/{job_id}") as response:
                assert response.status == 202


async def test_cancel_a_queued_and_a_running_job(server, slow_steps):
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{server.url}/ws") as ws:
            running = await submit(session, server.url, slow_workflow(value=1.0))
            await next_event(ws, "progress", job=running)
            queued = await submit(session, server.url, slow_workflow(value=2.0))

            async with session.delete(f"{server.url}/jobs/{queued}") as response:
                assert response.status == 200
                assert await response.json() == {"id": queued, "status": "cancelled"}
            assert (await next_event(ws, "cancelled"))["job"] == queued

            async with session.delete(f"{server.url}/jobs/{running}") as response:
                assert response.status == 202
                assert (await response.json())["cancelling"] is True
            assert (await next_event(ws, "cancelled", "succeeded", "failed"))["job"] == running

        job = await get_job(session, server.url, running)
        assert job["status"] == "cancelled" and job["executed"] == ["n"] and job["error"] is None
        assert (await get_job(session, server.url, queued))["status"] == "cancelled"
        assert toynodes.CALLS["Slow"] == 1  # the queued job never ran
        async with session.delete(f"{server.url}/jobs/{running}") as response:
            assert response.status == 409 and (await response.json())["status"] == "cancelled"


async def test_higher_priority_runs_first_then_submission_order(server, slow_steps):
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{server.url}/ws") as ws:
            blocker = await submit(session, server.url, slow_workflow(value=0.0))
            await next_event(ws, "progress", job=blocker)
            low = await submit(session, server.url, gray_workflow(value=1.0), priority=-1)
            normal_a = await submit(session, server.url, gray_workflow(value=2.0))
            high = await submit(session, server.url, gray_workflow(value=3.0), priority=5)
            normal_b = await submit(session, server.url, gray_workflow(value=4.0))
            async with session.delete(f"{server.url}/jobs/{blocker}") as response:
                assert response.status == 202
            order = [(await next_event(ws, "started"))["job"] for _ in range(4)]
    assert order == [high, normal_a, normal_b, low]


async def test_a_failing_node_fails_only_its_job(server):
    failing = {"graphflow": 1, "nodes": {
        "n": {"type": "Number", "inputs": {"value": 1.0}},
        "bad": {"type": "Fail", "inputs": {"value": link("n"), "when": "always"}},
        "show": {"type": "Show", "inputs": {"value": link("bad")}},
    }}
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{server.url}/ws") as ws:
            bad = await submit(session, server.url, failing)
            event = await next_event(ws, "failed", "succeeded")
        assert event["type"] == "failed" and event["job"] == bad
        assert event["error"]["node"] == "bad" and event["error"]["type"] == "ValueError"
        job = await get_job(session, server.url, bad)
        assert job["status"] == "failed" and job["executed"] == ["n"]
        assert {k: job["error"][k] for k in ("node", "type", "message")} == {"node": "bad", "type": "ValueError", "message": "boom"}

        good = await submit(session, server.url, gray_workflow())
        assert (await wait_for_status(session, server.url, good, "succeeded", "failed"))["status"] == "succeeded"


async def test_fifty_concurrent_submissions_all_run_exactly_once(server):
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{server.url}/ws") as ws:
            ids = await asyncio.gather(*(submit(session, server.url, gray_workflow(value=float(i), width=4, height=4))
                                         for i in range(50)))
            assert len(set(ids)) == 50
            finished = [await next_event(ws, "succeeded", "failed") for _ in range(50)]
        assert sorted(e["job"] for e in finished) == sorted(ids)
        assert {e["type"] for e in finished} == {"succeeded"}
        async with session.get(f"{server.url}/jobs", params={"limit": "100"}) as response:
            listed = (await response.json())["jobs"]
        assert sorted(job["id"] for job in listed) == sorted(ids)
        assert [job["created"] for job in listed] == sorted((job["created"] for job in listed), reverse=True)
        urls = {job["outputs"]["save"]["images"][0]["url"] for job in listed}
        assert len(urls) == 50  # every job wrote its own image


async def test_previews_are_throttled_per_job(server):
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{server.url}/ws") as ws:
            job_id = await submit(session, server.url, gray_workflow(previews=40))
            previews = []
            while True:
                event = await next_event(ws, "preview", "succeeded", "failed")
                if event["type"] != "preview":
                    break
                previews.append(event)
    assert event["type"] == "succeeded" and event["job"] == job_id
    assert 1 <= len(previews) < 40
    assert previews[0]["node"] == "save" and previews[0]["image_png"]


async def test_files_of_any_kind_are_reported_by_url_without_server_paths(server):
    async with aiohttp.ClientSession() as session:
        workflow = {"graphflow": 1, "nodes": {"x": {"type": "Number", "inputs": {"value": 7}},
                                              "note": {"type": "WriteNote", "inputs": {"value": link("x")}}}}
        job_id = await submit(session, server.url, workflow)
        job = await wait_for_status(session, server.url, job_id, "succeeded")
        assert job["outputs"] == {"note": {"notes": [{"url": "/outputs/notes/note.txt", "bytes": 4}]}}
        assert str(server.config.data_dir.resolve()) not in str(job) and str(server.config.data_dir) not in str(job)
        async with session.get(server.url + job["outputs"]["note"]["notes"][0]["url"]) as response:
            assert response.status == 200 and await response.text() == "7.0\n"


def seeded_workflow(seed) -> dict:
    return {"graphflow": 1, "nodes": {"n": {"type": "Seeded", "inputs": {"seed": seed}},
                                      "show": {"type": "Show", "inputs": {"value": link("n")}}}}


async def test_a_random_seed_is_drawn_per_job_and_shown_in_the_job_and_its_events(server):
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{server.url}/ws") as ws:
            first = await submit(session, server.url, seeded_workflow(-1))
            seeds_event = await next_event(ws, "seeds", job=first)
            done = await next_event(ws, "succeeded", job=first)
            second = await submit(session, server.url, seeded_workflow("random"))
            await next_event(ws, "succeeded", job=second)
        jobs = [await get_job(session, server.url, job_id) for job_id in (first, second)]
    drawn = [job["seeds"]["n"]["seed"] for job in jobs]
    assert drawn[0] != drawn[1] and seeds_event["seeds"] == done["seeds"] == jobs[0]["seeds"]
    assert [job["outputs"]["show"]["value"] for job in jobs] == drawn
    assert jobs[1]["executed"] == ["n", "show"]  # not the cached result of the first job
    assert jobs[0]["workflow"]["nodes"]["n"]["inputs"]["seed"] == -1  # the job keeps what was submitted


async def test_repeat_queues_n_jobs_with_the_seed_counting_up(server):
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{server.url}/jobs", json={"workflow": seeded_workflow(5), "repeat": 3}) as response:
            assert response.status == 202
            body = await response.json()
        assert body["status"] == "queued" and len(body["ids"]) == 3
        assert response.headers["Location"] == f"/jobs/{body['ids'][0]}"
        jobs = [await wait_for_status(session, server.url, job_id, "succeeded") for job_id in body["ids"]]
    assert [job["seeds"] for job in jobs] == [{"n": {"seed": s}} for s in (5, 6, 7)]
    assert [job["workflow"]["nodes"]["n"]["inputs"]["seed"] for job in jobs] == [5, 6, 7]


async def test_repeat_with_a_random_seed_draws_one_per_job(server):
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{server.url}/jobs", json={"workflow": seeded_workflow(-1), "repeat": 4}) as response:
            ids = (await response.json())["ids"]
        jobs = [await wait_for_status(session, server.url, job_id, "succeeded") for job_id in ids]
    assert len({job["seeds"]["n"]["seed"] for job in jobs}) == 4
