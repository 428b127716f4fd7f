"""The small holes of issue 19: hidden leftovers are never served, answers are strict JSON, requests aiohttp's parser
refuses get JSON too, and a Host header with user info is no loopback name."""
from __future__ import annotations

import json

import pytest

from graphflow.server.middleware import dumps, host_name

from .raw_http import assert_json_4xx, no_traceback, send, server_log, strict_json  # noqa: F401 (a fixture)


async def test_a_hidden_temporary_in_outputs_is_never_served(server, data_dir):
    outputs = data_dir / "outputs"
    (outputs / ".image.png.k2j4.tmp").write_bytes(b"half a png")
    (outputs / "sub").mkdir()
    (outputs / "sub" / ".hidden.png").write_bytes(b"x")
    (outputs / "visible.png").write_bytes(b"whole")
    for name in (b".image.png.k2j4.tmp", b"sub/.hidden.png", b"%2Eimage.png.k2j4.tmp"):
        answer = await send(server.url, "GET", b"/outputs/" + name)
        assert answer.status == 404, name
        assert_json_4xx(answer)
    assert (await send(server.url, "GET", b"/outputs/visible.png")).body == b"whole"


def test_answers_are_strict_json_even_for_nan_and_infinity():
    text = dumps({"received": float("nan"), "bounds": [float("inf"), -float("inf"), 1.5]})
    assert strict_json(text.encode()) == {"received": "nan", "bounds": ["inf", "-inf", 1.5]}
    assert dumps({"a": 1}) == json.dumps({"a": 1})


@pytest.mark.parametrize("request_line", [b"/jobs with spaces", b"/caf\xc3\xa9", b"/\xff\xfe", b"/jobs\x00"])
async def test_a_request_line_the_parser_refuses_gets_json(server, server_log, request_line):
    answer = await send(server.url, "GET", request_line)
    assert_json_4xx(answer, "malformed HTTP request")
    no_traceback(server_log)


async def test_a_header_the_parser_refuses_gets_json(server, server_log):
    assert_json_4xx(await send(server.url, "GET", b"/health", {"X-Bad": b"a\x00b"}), "malformed HTTP request")
    no_traceback(server_log)


@pytest.mark.parametrize("host, name", [
    ("localhost", "localhost"), ("LOCALHOST:8188", "localhost"), ("127.0.0.1:1", "127.0.0.1"), ("[::1]:80", "::1"),
    ("evil.com@localhost", None), ("localhost@evil.com", None), ("local host", None), ("[::1", None),
    ("localhost:http", None), ("", None), ("a:1:2", None),
])
def test_host_names_are_read_strictly(host, name):
    assert host_name(host) == name


async def test_a_host_with_user_info_is_refused(server):
    answer = await send(server.url, "GET", b"/health", host=b"evil.com@localhost")
    assert answer.status == 403
    assert_json_4xx(answer, "not allowed")


async def test_health_answers_while_job_listings_are_being_read(server, monkeypatch):
    """Heavy /jobs?limit=500 polls run off the event loop: /health (which needs no query at all) answers while
    they are still reading."""
    import asyncio
    import threading

    import aiohttp

    from graphflow.server.app import SERVER

    store = server.app[SERVER].store
    release, reading = threading.Event(), threading.Semaphore(0)
    original = store.list

    def slow_list(*args, **kwargs):
        reading.release()
        release.wait(10)  # a listing that takes as long as the test needs
        return original(*args, **kwargs)

    monkeypatch.setattr(store, "list", slow_list)
    async with aiohttp.ClientSession() as session:
        async def listing():
            async with session.get(f"{server.url}/jobs?limit=500") as response:
                return response.status

        polls = [asyncio.create_task(listing()) for _ in range(5)]
        await asyncio.to_thread(reading.acquire, True, 10)  # at least one listing is being read now
        async with session.get(f"{server.url}/health") as response:
            health = await response.json()
        assert not release.is_set() and health == {"status": "ok", "queue": 0, "running": None}
        release.set()
        assert await asyncio.gather(*polls) == [200] * 5


def test_the_queue_count_follows_every_change(tmp_path):
    from graphflow.server.store import JobStore

    store = JobStore(tmp_path / "jobs.sqlite")
    ids = [store.add({"graphflow": 1, "nodes": {}}) for _ in range(3)]
    assert store.queued == 3 == store.count("queued")
    store.cancel_queued(ids[0])
    store.cancel_queued(ids[0])  # no longer queued: no change
    store.claim_next()
    assert store.queued == 1 == store.count("queued")
    store.close()
    assert JobStore(tmp_path / "jobs.sqlite").queued == 1  # counted again when the file is opened
