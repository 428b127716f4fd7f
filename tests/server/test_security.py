"""Safe by default: token auth, host/origin guard, no path traversal, limits, verified uploads."""
from __future__ import annotations

import asyncio
import hashlib
import io
import random

import aiohttp
import pytest
from PIL import Image

from graphflow.registry import NodePack
from graphflow.server import Limits

from .conftest import gray_workflow, submit
from .toyimages import png_bytes


async def raw_request(url: str, request_line: str, headers: str = "") -> tuple[int, bytes]:
    """Send a request byte for byte (a client library would normalise ``..`` away before sending)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"{request_line}\r\nHost: {host}:{port}\r\n{headers}Connection: close\r\n\r\n".encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.fixture
def secret(data_dir):
    """A file next to outputs/ that no request may read."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "secret.txt"
    path.write_text("TOP-SECRET")
    return path


async def test_token_is_required_everywhere_but_health(start_server):
    server = start_server(token="s3cret-token")
    async with aiohttp.ClientSession() as session:
        for method, path in [("GET", "/jobs"), ("GET", "/nodes"), ("POST", "/jobs"), ("GET", "/jobs/x"),
                             ("DELETE", "/jobs/x"), ("GET", "/outputs/x.png"), ("POST", "/uploads"), ("GET", "/ws")]:
            async with session.request(method, server.url + path) as response:
                assert response.status == 401, (method, path)
                assert response.headers["WWW-Authenticate"] == "Bearer"
            async with session.request(method, server.url + path, headers={"Authorization": "Bearer wrong"}) as response:
                assert response.status == 401, (method, path)
        async with session.get(f"{server.url}/health") as response:
            assert response.status == 200
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await session.ws_connect(f"{server.url}/ws")

    async with aiohttp.ClientSession(headers={"Authorization": "Bearer s3cret-token"}) as session:
        async with session.get(f"{server.url}/jobs") as response:
            assert response.status == 200
        job_id = await submit(session, server.url, gray_workflow())
        async with session.ws_connect(f"{server.url}/ws?job={job_id}") as ws:
            assert (await ws.receive_json(timeout=5))["type"] == "status"


async def test_foreign_host_or_origin_is_refused(server):
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.url}/jobs", headers={"Host": "evil.example"}) as response:
            assert response.status == 403  # DNS rebinding: a page on evil.example resolving to 127.0.0.1
        async with session.post(f"{server.url}/jobs", json={"workflow": gray_workflow()},
                                headers={"Origin": "http://evil.example"}) as response:
            assert response.status == 403  # a cross-site page posting a job
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await session.ws_connect(f"{server.url}/ws", origin="http://evil.example")
        async with session.get(f"{server.url}/jobs", headers={"Origin": server.url}) as response:
            assert response.status == 200  # a page served by this server itself
        async with session.post(f"{server.url}/jobs", data='{"workflow": {}}',
                                headers={"Content-Type": "text/plain"}) as response:
            assert response.status == 415  # a "simple" cross-site request type
        async with session.get(f"{server.url}/health") as response:
            assert (await response.json())["queue"] == 0


@pytest.mark.parametrize("path, status", [
    ("/outputs/../secret.txt", 400),
    ("/outputs/%2e%2e/secret.txt", 400),
    ("/outputs/%2E%2E%2Fsecret.txt", 400),
    ("/outputs/..%2fsecret.txt", 400),
    ("/outputs/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd", 400),
    ("/outputs/../../../../etc/passwd", 400),
    ("/outputs//etc/passwd", 400),
    ("/outputs/%2Fetc%2Fpasswd", 400),
    ("/outputs/sub/..%5c..%5csecret.txt", 400),
    ("/outputs/leak.txt", 404),  # a symlink inside outputs/ that points out
])
async def test_outputs_cannot_escape_the_outputs_directory(server, secret, path, status):
    (secret.parent / "outputs" / "leak.txt").symlink_to(secret)
    answer, body = await raw_request(server.url, f"GET {path} HTTP/1.1")
    assert answer == status
    assert b"TOP-SECRET" not in body and b"root:" not in body


async def test_outputs_serves_files_inside_with_their_type(server, data_dir):
    (data_dir / "outputs" / "sub").mkdir()
    (data_dir / "outputs" / "sub" / "a b.png").write_bytes(png_bytes(3, 2, 9))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.url}/outputs/sub/a%20b.png") as response:
            assert response.status == 200 and response.content_type == "image/png"
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert await response.read() == png_bytes(3, 2, 9)
        async with session.get(f"{server.url}/outputs/missing.png") as response:
            assert response.status == 404 and "error" in await response.json()


async def test_oversized_body_is_refused_with_413(start_server):
    server = start_server(limits=Limits(max_body_bytes=10_000))
    workflow = gray_workflow()
    workflow["nodes"]["x"]["title"] = "x" * 20_000
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{server.url}/jobs", json={"workflow": workflow}) as response:
            assert response.status == 413
            assert "10000" in (await response.json())["error"]
        async with session.get(f"{server.url}/health") as response:
            assert (await response.json())["queue"] == 0


async def test_limits_name_the_node_and_input(start_server):
    server = start_server(limits=Limits(max_nodes=6, max_pixels=100 * 100, max_literal={"steps": 50, "batch_size": 4}))
    slow = {"graphflow": 1, "nodes": {"n": {"type": "Number", "inputs": {}},
                                      "s": {"type": "Slow", "inputs": {"value": {"from": "n", "output": "value"}, "steps": 51}},
                                      "show": {"type": "Show", "inputs": {"value": {"from": "s", "output": "value"}}}}}
    many = {"graphflow": 1, "nodes": {f"n{i}": {"type": "Number", "inputs": {}} for i in range(7)}}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{server.url}/jobs", json={"workflow": slow}) as response:
            assert response.status == 400
            assert (await response.json())["node_errors"] == {
                "s": [{"input": "steps", "message": "steps is above this server's limit", "expected": "at most 50", "received": 51,
                       "code": "over_limit"}]}
        async with session.post(f"{server.url}/jobs", json={"workflow": gray_workflow(width=101, height=100)}) as response:
            assert response.status == 400
            [problem] = (await response.json())["node_errors"]["save"]
            assert problem["input"] == "width" and problem["received"] == 10_100
        async with session.post(f"{server.url}/jobs", json={"workflow": gray_workflow(width=50, height=50, batch_size=5)}) as response:
            errors = (await response.json())["node_errors"]["save"]
            assert response.status == 400 and {e["input"] for e in errors} == {"batch_size", "width"}
        async with session.post(f"{server.url}/jobs", json={"workflow": many}) as response:
            assert response.status == 400 and (await response.json())["node_errors"][""][0]["received"] == 7
        async with session.get(f"{server.url}/jobs") as response:
            assert (await response.json())["jobs"] == []
        await submit(session, server.url, gray_workflow(width=50, height=50, batch_size=4))  # at the limits is fine


async def test_node_packs_give_the_default_limits_and_hints(start_server, toy_registry):
    toy_registry.add_pack(NodePack(literal_limits={"steps": 7}, output_example="SaveGray"))
    toy_registry.add_pack(NodePack(literal_limits={"steps": 9, "bias": 4}))  # two packs: the lower bound wins
    server = start_server(toy_registry, limits=Limits(max_literal={"bias": 6}))  # a flag overrides a pack's bound
    slow = {"graphflow": 1, "nodes": {"n": {"type": "Number", "inputs": {}},
                                      "s": {"type": "Slow", "inputs": {"value": {"from": "n", "output": "value"}, "steps": 8}},
                                      "show": {"type": "Show", "inputs": {"value": {"from": "s", "output": "value"}}}}}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{server.url}/jobs", json={"workflow": slow}) as response:
            assert response.status == 400
            [problem] = (await response.json())["node_errors"]["s"]
            assert (problem["input"], problem["expected"], problem["code"]) == ("steps", "at most 7", "over_limit")
        async with session.post(f"{server.url}/jobs", json={"workflow": gray_workflow(bias=6)}) as response:
            assert response.status == 202
        no_output = {"graphflow": 1, "nodes": {"x": {"type": "Number", "inputs": {}}}}
        async with session.post(f"{server.url}/jobs", json={"workflow": no_output}) as response:
            assert (await response.json())["node_errors"][""][0]["expected"] == "at least one output node (e.g. SaveGray)"


async def upload(session: aiohttp.ClientSession, url: str, data: bytes, filename: str = "a.png", field: str = "image"):
    form = aiohttp.FormData()
    form.add_field(field, data, filename=filename, content_type="application/octet-stream")
    async with session.post(f"{url}/uploads", data=form) as response:
        return response.status, await response.json()


async def test_upload_stores_a_verified_image_under_its_content_hash(server, data_dir):
    png = png_bytes(5, 4, 200)
    async with aiohttp.ClientSession() as session:
        status, body = await upload(session, server.url, png, filename="../../escape.png")
        assert status == 201
        assert body == {"name": hashlib.sha256(png).hexdigest() + ".png", "width": 5, "height": 4}
        assert (data_dir / "uploads" / body["name"]).read_bytes() == png
        assert not list(data_dir.parent.rglob("escape.png"))  # the client's filename is never used

        jpeg = io.BytesIO()
        Image.new("RGB", (6, 6), "red").save(jpeg, format="JPEG")
        status, body = await upload(session, server.url, jpeg.getvalue(), filename="picture.png")
        assert status == 201 and body["name"].endswith(".jpg")  # the real format decides the extension

        status, again = await upload(session, server.url, png, filename="other.png")
        assert status == 201 and again["name"] == hashlib.sha256(png).hexdigest() + ".png"
    assert sorted(p.suffix for p in (data_dir / "uploads").iterdir()) == [".jpg", ".png"]


@pytest.mark.parametrize("data, reason", [
    (b"#!/bin/sh\nrm -rf /\n", "is not an image in a format this server reads"),
    (png_bytes(8, 8, 1)[:-30], "is a truncated or corrupt PNG file"),
])
async def test_upload_of_a_non_image_is_refused(server, data_dir, data, reason):
    async with aiohttp.ClientSession() as session:
        status, body = await upload(session, server.url, data)
    assert status == 400 and reason in body["error"]
    assert list((data_dir / "uploads").iterdir()) == []


async def test_upload_limits_and_shape(start_server, data_dir):
    server = start_server(limits=Limits(max_upload_bytes=2_000, max_upload_pixels=50 * 50))
    async with aiohttp.ClientSession() as session:
        noisy = io.BytesIO()
        Image.frombytes("L", (60, 60), random.Random(0).randbytes(3600)).save(noisy, format="PNG")  # > 2 kB
        status, body = await upload(session, server.url, noisy.getvalue())
        assert status == 413
        status, body = await upload(session, server.url, png_bytes(51, 50, 0))
        assert status == 400 and "2550 pixels" in body["error"]
        status, body = await upload(session, server.url, png_bytes(4, 4, 0), field="file")
        assert status == 400 and "'image'" in body["error"]
        async with session.post(f"{server.url}/uploads", data=png_bytes(4, 4, 0)) as response:
            assert response.status == 415
    assert list((data_dir / "uploads").iterdir()) == []


def test_the_engine_runs_under_the_servers_run_time_limits(start_server, toy_registry):
    """What nodes make while they run is bounded too: --max-pixels as "pixels", the node packs' run_limits, and
    --max-run over both (nodes check them with ctx.check_limit before allocating)."""
    from graphflow.server.app import SERVER

    toy_registry.add_pack(NodePack(run_limits={"prompt_chunks": 32, "frames": 100}))
    server = start_server(limits=Limits(max_pixels=4096, max_run={"frames": 10}))
    assert server.app[SERVER].engine.settings.limits == {"pixels": 4096, "prompt_chunks": 32, "frames": 10}
