"""A real server on a free loopback port, in its own thread and event loop, and a runner for ``async def`` tests.

Tests talk to it with aiohttp's ClientSession exactly as any client would. Toy nodes keep these tests fast.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import socket
import threading
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from graphflow.registry import Registry
from graphflow.server import ServerConfig, create_app
from tests.engine import toynodes

from . import toyimages

TEST_SECONDS = 30  # an async test is cut off after this, unless it is marked @pytest.mark.timeout(N)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """Run ``async def`` tests on a fresh event loop (no pytest-asyncio needed)."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    kwargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    marker = pyfuncitem.get_closest_marker("timeout")
    asyncio.run(asyncio.wait_for(pyfuncitem.obj(**kwargs), marker.args[0] if marker else TEST_SECONDS))
    return True


class RunningServer:
    """``create_app`` served on 127.0.0.1 with an OS-chosen port, until ``stop()``."""

    def __init__(self, config: ServerConfig, registry: Registry):
        self.config = config
        self.app = create_app(config, registry)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._serve, name="test-server", daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "server did not start"

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        runner = web.AppRunner(self.app, shutdown_timeout=2)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.SockSite(runner, self.sock).start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(20)
            assert not self._thread.is_alive(), "server did not stop"


@pytest.fixture
def toy_registry() -> Registry:
    registry = Registry()
    registry.add_module(toynodes)
    registry.add_module(toyimages)
    return registry


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def start_server(data_dir, toy_registry):
    """``start_server(token=..., limits=Limits(...))`` → a RunningServer on ``data_dir``; all are stopped at the end."""
    started: list[RunningServer] = []

    def start(registry: Registry | None = None, **config: Any) -> RunningServer:
        server = RunningServer(ServerConfig(data_dir=data_dir, **config), registry or toy_registry)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(start_server) -> RunningServer:
    return start_server()


@pytest.fixture
def slow_steps(monkeypatch):
    """Make toy ``Slow`` nodes take 50 ms per step (10 s for slow_workflow's 200 steps), so a job
    stays running while a test acts on it."""
    toynodes.CALLS.clear()
    monkeypatch.setattr(toynodes, "ON_STEP", lambda i: threading.Event().wait(0.05))


# -- helpers for the tests ------------------------------------------------------------------------------------
def link(node: str, output: str = "value") -> dict:
    return {"from": node, "output": output}


def gray_workflow(value: float = 1.0, bias: int = 0, width: int = 16, height: int = 8, **save: Any) -> dict:
    """x, y → sum → save: a PNG of width × height."""
    return {"graphflow": 1, "nodes": {
        "x": {"type": "Number", "inputs": {"value": value}},
        "y": {"type": "Number", "inputs": {"value": 2.0}},
        "sum": {"type": "Add", "inputs": {"a": link("x"), "b": link("y"), "bias": bias}},
        "save": {"type": "SaveGray", "inputs": {"value": link("sum"), "width": width, "height": height, **save}},
    }}


def slow_workflow(steps: int = 200, value: float = 1.0) -> dict:
    """With the ``slow_steps`` fixture, runs for 10 s: tests cancel it long before."""
    return {"graphflow": 1, "nodes": {
        "n": {"type": "Number", "inputs": {"value": value}},
        "slow": {"type": "Slow", "inputs": {"value": link("n"), "steps": steps}},
        "show": {"type": "Show", "inputs": {"value": link("slow")}},
    }}


async def submit(session: aiohttp.ClientSession, url: str, workflow: dict, **extra: Any) -> str:
    async with session.post(f"{url}/jobs", json={"workflow": workflow, **extra}) as response:
        body = await response.json()
        assert response.status == 202, body
        assert body["status"] == "queued"
        return body["id"]


async def get_job(session: aiohttp.ClientSession, url: str, job_id: str) -> dict:
    async with session.get(f"{url}/jobs/{job_id}") as response:
        assert response.status == 200
        return await response.json()


async def wait_for_status(session: aiohttp.ClientSession, url: str, job_id: str, *statuses: str) -> dict:
    """Poll until the job reaches one of ``statuses`` (the test's own timeout bounds this)."""
    while True:
        job = await get_job(session, url, job_id)
        if job["status"] in statuses:
            return job
        await asyncio.sleep(0.02)


async def next_event(ws: aiohttp.ClientWebSocketResponse, *types: str, job: str | None = None) -> dict:
    """The next WebSocket event of one of ``types`` (for ``job`` if given), skipping others. A node may send
    nothing for a long while on a loaded machine (a first model load imports the libraries): the test's own
    timeout bounds the whole wait."""
    while True:
        message = await ws.receive(timeout=90)
        assert message.type == aiohttp.WSMsgType.TEXT, message
        event = json.loads(message.data)
        if event["type"] in types and (job is None or event.get("job") == job):
            return event
