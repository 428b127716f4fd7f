"""The server with the real Stable Diffusion nodes: txt2img on the built-in tiny-sd model (64×64), uploads
read by LoadImage. One server for the module, so the checkpoint is loaded once and stays in the engine's cache."""
from __future__ import annotations

import base64
import copy
import importlib
import io
import json
import re
from pathlib import Path

import aiohttp
import pytest
from PIL import Image

from graphflow.registry import Registry
from graphflow.server import ServerConfig

from .conftest import RunningServer, get_job, next_event, submit
from .test_docs import documented_client
from .toyimages import png_bytes

TXT2IMG = Path(__file__).resolve().parents[2] / "workflows" / "txt2img.json"
SECONDS = 240  # generous: the tiny model is built on first use and the CPU may be shared


@pytest.fixture(scope="module")
def sd_server(tmp_path_factory):
    registry = Registry()
    registry.add_module(importlib.import_module("nodes"))
    server = RunningServer(ServerConfig(data_dir=tmp_path_factory.mktemp("sd") / "data"), registry)
    yield server
    server.stop()


@pytest.fixture
def txt2img() -> dict:
    if not TXT2IMG.exists():
        pytest.skip("workflows/txt2img.json is not there yet")
    workflow = json.loads(TXT2IMG.read_text(encoding="utf-8"))
    return with_literal(workflow, "steps", 3)  # few steps: this is about the server, not image quality


def with_literal(workflow: dict, name: str, value) -> dict:
    """A copy with every node's ``name`` literal set to ``value`` (a callable gets the old value)."""
    changed = copy.deepcopy(workflow)
    for node in changed["nodes"].values():
        if name in node["inputs"]:
            node["inputs"][name] = value(node["inputs"][name]) if callable(value) else value
    return changed


def node_of_type(workflow: dict, type_name: str) -> tuple[str, dict]:
    [(node_id, node)] = [(i, n) for i, n in workflow["nodes"].items() if n["type"] == type_name]
    return node_id, node


async def follow(ws: aiohttp.ClientWebSocketResponse, job_id: str) -> list[dict]:
    events = []
    while not events or events[-1]["type"] not in ("succeeded", "failed", "cancelled"):
        events.append(await next_event(ws, "started", "node_started", "node_cached", "progress", "node_finished",
                                       "succeeded", "failed", "cancelled", job=job_id))
    return events


@pytest.mark.timeout(SECONDS)
async def test_txt2img_runs_to_a_downloadable_png(sd_server, txt2img):
    _, latent = node_of_type(txt2img, "EmptyLatent")
    size = (latent["inputs"].get("width", 512), latent["inputs"].get("height", 512))
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{sd_server.url}/ws") as ws:
            job_id = await submit(session, sd_server.url, txt2img)
            events = await follow(ws, job_id)
        assert events[-1]["type"] == "succeeded", events[-1]
        progress = [e for e in events if e["type"] == "progress"]
        assert progress and progress[-1]["value"] == progress[-1]["max"] == 3
        job = await get_job(session, sd_server.url, job_id)
        assert job["status"] == "succeeded" and job["progress"] == {k: progress[-1][k] for k in ("node", "value", "max")}
        [result] = job["outputs"].values()
        [image] = result["images"]
        assert (image["width"], image["height"]) == size
        async with session.get(sd_server.url + image["url"]) as response:
            assert response.status == 200 and response.content_type == "image/png"
            png = await response.read()
    with Image.open(io.BytesIO(png)) as picture:
        assert picture.format == "PNG" and picture.size == size


@pytest.mark.timeout(SECONDS)
async def test_resubmitting_txt2img_with_a_new_seed_reuses_what_the_seed_does_not_touch(sd_server, txt2img):
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{sd_server.url}/ws") as ws:
            first = await submit(session, sd_server.url, txt2img)
            assert (await follow(ws, first))[-1]["type"] == "succeeded"
            reseeded = with_literal(txt2img, "seed", lambda seed: seed + 1)
            second = await submit(session, sd_server.url, reseeded)
            assert (await follow(ws, second))[-1]["type"] == "succeeded"
        job = await get_job(session, sd_server.url, second)
    changed = {i for i, n in txt2img["nodes"].items() if "seed" in n["inputs"]}
    affected = changed | downstream(txt2img, changed)
    assert set(job["executed"]) == affected
    assert set(job["cached"]) == set(txt2img["nodes"]) - affected
    assert node_of_type(txt2img, "LoadCheckpoint")[0] in job["cached"]


def downstream(workflow: dict, sources: set[str]) -> set[str]:
    """Every node that (indirectly) takes an input from one of ``sources``."""
    found: set[str] = set()
    frontier = set(sources)
    while frontier:
        frontier = {i for i, n in workflow["nodes"].items() if i not in found
                    and any(isinstance(v, dict) and v.get("from") in frontier for v in n["inputs"].values())}
        found |= frontier
    return found


@pytest.mark.timeout(SECONDS)
async def test_cancelling_a_running_txt2img_stops_it_at_the_next_step(sd_server, txt2img):
    long_run = with_literal(txt2img, "steps", 200)
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{sd_server.url}/ws") as ws:
            job_id = await submit(session, sd_server.url, long_run)
            step = await next_event(ws, "progress", job=job_id)
            async with session.delete(f"{sd_server.url}/jobs/{job_id}") as response:
                assert response.status == 202
            end = await next_event(ws, "succeeded", "failed", "cancelled", job=job_id)
        job = await get_job(session, sd_server.url, job_id)
    assert end["type"] == "cancelled" and job["status"] == "cancelled"
    assert step["node"] not in job["executed"] and job["progress"]["value"] < 200


@pytest.mark.timeout(SECONDS)
async def test_an_uploaded_image_is_what_LoadImage_reads(sd_server):
    original = png_bytes(24, 16, 77)
    form = aiohttp.FormData()
    form.add_field("image", original, filename="mine.png", content_type="image/png")
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{sd_server.url}/uploads", data=form) as response:
            assert response.status == 201
            name = (await response.json())["name"]
        workflow = {"graphflow": 1, "nodes": {
            "load": {"type": "LoadImage", "inputs": {"name": name}},
            "save": {"type": "SaveImage", "inputs": {"images": {"from": "load", "output": "image"}, "filename_prefix": "copy"}},
        }}
        async with session.ws_connect(f"{sd_server.url}/ws") as ws:
            job_id = await submit(session, sd_server.url, workflow)
            assert (await follow(ws, job_id))[-1]["type"] == "succeeded"
        job = await get_job(session, sd_server.url, job_id)
        [image] = job["outputs"]["save"]["images"]
        async with session.get(sd_server.url + image["url"]) as response:
            copy_png = await response.read()
    with Image.open(io.BytesIO(copy_png)) as saved, Image.open(io.BytesIO(original)) as source:
        assert saved.size == (24, 16) and saved.convert("RGB").tobytes() == source.convert("RGB").tobytes()


@pytest.mark.timeout(SECONDS)
async def test_missing_files_are_refused_with_400_before_anything_is_queued(sd_server):
    workflow = {"graphflow": 1, "nodes": {
        "ckpt": {"type": "LoadCheckpoint", "inputs": {"name": "v1-5-pruned"}},
        "load": {"type": "LoadImage", "inputs": {"name": "never-uploaded.png"}},
        "encode": {"type": "VAEEncode", "inputs": {"vae": {"from": "ckpt", "output": "vae"}, "image": {"from": "load", "output": "image"}}},
        "decode": {"type": "VAEDecode", "inputs": {"vae": {"from": "ckpt", "output": "vae"}, "latent": {"from": "encode", "output": "latent"}}},
        "save": {"type": "SaveImage", "inputs": {"images": {"from": "decode", "output": "image"}}},
    }}
    async with aiohttp.ClientSession() as session:
        jobs_before = await job_ids(session, sd_server.url)
        async with session.post(f"{sd_server.url}/jobs", json={"workflow": workflow}) as response:
            assert response.status == 400
            body = await response.json()
        assert await job_ids(session, sd_server.url) == jobs_before
    errors = body["node_errors"]
    assert set(errors) == {"ckpt", "load"}
    assert errors["ckpt"][0]["input"] == "name" and "tiny-sd" in errors["ckpt"][0]["expected"]
    assert errors["load"][0]["received"] == "never-uploaded.png" and "no such file" in errors["load"][0]["message"]
    # the messages name the folders by their labels, not by where this server keeps them
    assert "<inputs>" in errors["load"][0]["message"]
    assert str(Path(sd_server.config.data_dir).resolve()) not in json.dumps(body)


async def job_ids(session: aiohttp.ClientSession, url: str) -> list[str]:
    async with session.get(f"{url}/jobs") as response:
        return [job["id"] for job in (await response.json())["jobs"]]


@pytest.mark.timeout(SECONDS)
async def test_the_documented_client_runs_hires_fix(sd_server, tmp_path, monkeypatch, capsys):
    hires_fix = TXT2IMG.with_name("hires_fix.json")
    if not hires_fix.exists():
        pytest.skip("workflows/hires_fix.json is not there yet")
    monkeypatch.delenv("GRAPHFLOW_TOKEN", raising=False)
    workflow = with_literal(json.loads(hires_fix.read_text(encoding="utf-8")), "steps", 3)
    job = await documented_client()["run_job"](sd_server.url, workflow, str(tmp_path))
    assert job["status"] == "succeeded"
    [saved] = tmp_path.glob("*.png")
    _, latent = node_of_type(workflow, "EmptyLatent")
    _, upscale = node_of_type(workflow, "LatentUpscale")
    scale = upscale["inputs"]["scale_by"]
    with Image.open(saved) as image:
        assert image.size == (latent["inputs"]["width"] * scale, latent["inputs"]["height"] * scale)
    assert re.search(r"sample2: (\d+)/\1", capsys.readouterr().out)  # progress of the second pass, to its end


@pytest.mark.timeout(SECONDS)
async def test_sampler_previews_arrive_as_small_pngs(sd_server, txt2img):
    with_previews = with_literal(txt2img, "steps", 6)
    sampler, _ = node_of_type(txt2img, "Sample")
    with_previews["nodes"][sampler]["inputs"]["preview_every"] = 1
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{sd_server.url}/ws") as ws:
            job_id = await submit(session, sd_server.url, with_previews)
            previews = []
            while True:
                event = await next_event(ws, "preview", "succeeded", "failed", job=job_id)
                if event["type"] != "preview":
                    break
                previews.append(event)
    assert event["type"] == "succeeded"
    assert 1 <= len(previews) <= 6 and {p["node"] for p in previews} == {sampler}
    with Image.open(io.BytesIO(base64.b64decode(previews[0]["image_png"]))) as picture:
        assert picture.format == "PNG" and max(picture.size) <= 256


@pytest.mark.timeout(SECONDS)
async def test_a_prompt_past_the_servers_window_limit_fails_naming_node_and_input(sd_server, txt2img):
    """issue 19: "BREAK " * 3000 ran for minutes; the server bounds a prompt's windows (prompt_chunks, 32 by default)."""
    workflow = copy.deepcopy(txt2img)
    workflow["nodes"]["positive"]["inputs"]["text"] = "a red circle BREAK " * 40
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{sd_server.url}/ws") as ws:
            job_id = await submit(session, sd_server.url, workflow)
            end = await next_event(ws, "succeeded", "failed", "cancelled", job=job_id)
    assert end["type"] == "failed"
    error = end["error"]
    assert (error["node"], error["input"]) == ("positive", "text")
    assert "prompt_chunks" in error["message"] and "40" in error["message"] and "32" in error["message"]
