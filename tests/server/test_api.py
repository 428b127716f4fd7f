"""Request checking and the read-only routes: bad submissions queue nothing, unknown ids are 404, listing, catalog."""
from __future__ import annotations

import aiohttp
import pytest

from .conftest import gray_workflow, link, submit, wait_for_status


async def queued_count(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(f"{url}/jobs") as response:
        return len((await response.json())["jobs"])


async def test_invalid_workflow_is_400_with_errors_per_node_and_nothing_is_queued(server):
    broken = gray_workflow()
    broken["nodes"]["sum"]["inputs"]["bias"] = 3  # must be a multiple of 2
    broken["nodes"]["y"]["type"] = "Numbr"
    broken["nodes"]["save"]["inputs"]["value"] = link("nowhere")
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{server.url}/jobs", json={"workflow": broken}) as response:
            assert response.status == 400
            body = await response.json()
        assert "3 problem(s)" in body["error"]
        errors = body["node_errors"]
        assert set(errors) == {"sum", "y", "save"}
        [bias] = errors["sum"]
        assert bias["input"] == "bias" and bias["received"] == 3 and "multiple of 2" in bias["expected"]
        assert "Number" in errors["y"][0]["message"] and errors["y"][0]["received"] == "Numbr"
        assert errors["save"][0]["input"] == "value" and errors["save"][0]["received"] == "nowhere"
        assert set(bias) == {"input", "message", "expected", "received", "code", "node_type"} and bias["node_type"] == "Add"
        assert (bias["code"], errors["y"][0]["code"], errors["save"][0]["code"]) == ("bad_value", "unknown_node_type", "missing_link")
        assert await queued_count(session, server.url) == 0


async def test_document_level_problems_are_listed_under_the_empty_key(server):
    no_output = {"graphflow": 1, "nodes": {"x": {"type": "Number", "inputs": {}}}}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{server.url}/jobs", json={"workflow": no_output}) as response:
            assert response.status == 400
            [problem] = (await response.json())["node_errors"][""]
            assert (problem["message"], problem["code"]) == ("workflow has no output node", "no_output")
        async with session.post(f"{server.url}/jobs", json={"workflow": {"graphflow": 2, "nodes": {}}}) as response:
            assert response.status == 400
            body = await response.json()
            assert "not a graphflow workflow" in body["error"] and list(body["node_errors"]) == [""]
            assert body["node_errors"][""][0]["code"] == "bad_document"
        async with session.post(f"{server.url}/jobs", json={"workflow": gray_workflow(), "outputs": ["sum"]}) as response:
            assert response.status == 400
            assert "not an output node" in (await response.json())["node_errors"]["sum"][0]["message"]
        assert await queued_count(session, server.url) == 0


@pytest.mark.parametrize("body, message", [
    ('{"workflow": {"graphflow": 1,', "invalid JSON at line 1, column 30"),
    ("[1, 2]", "must be a JSON object"),
    ('{"workflow": {}, "prio": 1}', "unknown field(s) prio"),
    ('{"workflow": {}, "priority": "high"}', "priority must be an integer"),
    ('{"workflow": {}, "outputs": "save"}', "outputs must be a list"),
    ('{"workflow": {}, "repeat": 0}', "repeat must be an integer from 1 to 100"),
    ('{"workflow": {}, "repeat": 101}', "repeat must be an integer from 1 to 100"),
    ('{"workflow": {}, "repeat": "3"}', "repeat must be an integer"),
])
async def test_malformed_requests_get_a_one_line_400(server, body, message):
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{server.url}/jobs", data=body, headers={"Content-Type": "application/json"}) as response:
            assert response.status == 400
            error = (await response.json())["error"]
        assert message in error and "\n" not in error
        assert await queued_count(session, server.url) == 0


async def test_unknown_jobs_are_404(server):
    async with aiohttp.ClientSession() as session:
        for method in ("GET", "DELETE"):
            async with session.request(method, f"{server.url}/jobs/no-such-job") as response:
                assert response.status == 404
                assert "no-such-job" in (await response.json())["error"]
        async with session.get(f"{server.url}/ws", params={"job": "no-such-job"}) as response:
            assert response.status == 404
        async with session.get(f"{server.url}/nowhere") as response:
            assert response.status == 404 and "error" in await response.json()


async def test_job_detail_keeps_the_workflow_and_requested_outputs(server):
    async with aiohttp.ClientSession() as session:
        job_id = await submit(session, server.url, gray_workflow(value=4.0), outputs=["save"])
        job = await wait_for_status(session, server.url, job_id, "succeeded")
    assert job["workflow"]["nodes"]["x"]["inputs"]["value"] == 4.0
    assert job["requested_outputs"] == ["save"] and job["priority"] == 0


async def test_list_is_newest_first_with_status_filter_and_paging(server):
    async with aiohttp.ClientSession() as session:
        ids = [await submit(session, server.url, gray_workflow(value=float(i))) for i in range(3)]
        for job_id in ids:
            await wait_for_status(session, server.url, job_id, "succeeded")
        async with session.get(f"{server.url}/jobs") as response:
            assert [job["id"] for job in (await response.json())["jobs"]] == ids[::-1]
        async with session.get(f"{server.url}/jobs", params={"limit": "1", "offset": "1"}) as response:
            assert [job["id"] for job in (await response.json())["jobs"]] == [ids[1]]
        async with session.get(f"{server.url}/jobs", params={"status": "failed"}) as response:
            assert (await response.json())["jobs"] == []
        async with session.get(f"{server.url}/jobs", params={"status": "succeeded"}) as response:
            assert len((await response.json())["jobs"]) == 3
        for bad in ({"status": "done"}, {"limit": "0"}, {"limit": "x"}, {"offset": "-1"}):
            async with session.get(f"{server.url}/jobs", params=bad) as response:
                assert response.status == 400, bad


async def test_nodes_and_health(server):
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.url}/nodes") as response:
            catalog = await response.json()
        assert catalog["Slow"]["inputs"]["steps"]["kind"] == "literal"
        assert catalog["SaveGray"]["output_node"] is True
        async with session.get(f"{server.url}/health") as response:
            assert await response.json() == {"status": "ok", "queue": 0, "running": None}


async def test_missing_files_are_400_with_every_one_named_and_nothing_is_queued(server):
    (server.config.data_dir / "uploads" / "seven.txt").write_text("7")
    workflow = {"graphflow": 1, "nodes": {
        "a": {"type": "LoadNumber", "inputs": {"name": "sevn.txt"}},
        "b": {"type": "LoadNumber", "inputs": {"name": "eight.txt"}},
        "sum": {"type": "Add", "inputs": {"a": link("a"), "b": link("b")}},
        "show": {"type": "Show", "inputs": {"value": link("sum")}},
    }}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{server.url}/jobs", json={"workflow": workflow}) as response:
            assert response.status == 400
            body = await response.json()
        assert "2 problem(s)" in body["error"]
        [missing] = body["node_errors"]["a"]
        assert missing["input"] == "name" and missing["received"] == "sevn.txt" and missing["expected"] == ["seven.txt"]
        assert missing["code"] == "missing_file"
        assert body["node_errors"]["b"][0]["received"] == "eight.txt"
        assert await queued_count(session, server.url) == 0
        workflow["nodes"]["a"]["inputs"]["name"] = workflow["nodes"]["b"]["inputs"]["name"] = "seven.txt"
        job_id = await submit(session, server.url, workflow)
        assert (await wait_for_status(session, server.url, job_id, "succeeded"))["outputs"]["show"]["value"] == 14.0


async def test_a_repeat_the_queue_cannot_hold_is_429_and_queues_none(start_server):
    from graphflow.server.limits import Limits

    server = start_server(limits=Limits(max_queued=2))
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{server.url}/jobs", json={"workflow": gray_workflow(), "repeat": 3}) as response:
            assert response.status == 429
            assert "queue is full" in (await response.json())["error"]
        assert await queued_count(session, server.url) == 0


async def test_a_workflow_in_a_node_packs_format_is_read_by_the_pack(server):
    """POST /jobs reads documents as every entry point does: the toy pack's "pairs" format here."""
    pairs = {"pairs": [["x", "Number", {"value": 5}], ["note", "WriteNote", {"from": "x"}]]}
    async with aiohttp.ClientSession() as session:
        job_id = await submit(session, server.url, pairs)
        job = await wait_for_status(session, server.url, job_id, "succeeded")
        assert job["workflow"]["nodes"]["note"]["inputs"]["value"] == {"from": "x", "output": "value"}  # stored converted
        async with session.post(f"{server.url}/jobs", json={"workflow": {"pairs": [["x"]]}}) as response:
            assert response.status == 400 and "each pair is [id, type, inputs]" in (await response.json())["error"]
