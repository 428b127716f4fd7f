"""ComfyUI's HTTP API on graphflow's server: its routes answer in ComfyUI's shapes, over graphflow's own queue."""
from __future__ import annotations

import asyncio
import io
import json
import struct

import aiohttp
import pytest

from . import comfytoys
from .conftest import submit, wait_for_status
from .toyimages import png_bytes


@pytest.fixture
def comfy(start_server):
    return start_server(registry=comfytoys.registry())


async def post_prompt(session, url: str, prompt: dict, status: int = 200, **extra) -> dict:
    async with session.post(f"{url}/prompt", json={"prompt": prompt, **extra}) as response:
        body = await response.json()
        assert response.status == status, body
        return body


async def history_of(session, url: str, prompt_id: str) -> dict:
    """Poll GET /history/{id} until the prompt is in it (the test's timeout bounds this)."""
    while True:
        async with session.get(f"{url}/history/{prompt_id}") as response:
            assert response.status == 200
            body = await response.json()
        if body:
            return body[prompt_id]
        await asyncio.sleep(0.02)


async def messages_until_done(ws, prompt_id: str) -> list:
    """Every frame (JSON messages as dicts, binary frames as bytes) up to the closing executing(node=None)."""
    frames = []
    while True:
        message = await ws.receive(timeout=15)
        if message.type == aiohttp.WSMsgType.BINARY:
            frames.append(message.data)
            continue
        assert message.type == aiohttp.WSMsgType.TEXT, message
        frames.append(json.loads(message.data))
        data = frames[-1]["data"]
        if frames[-1]["type"] == "executing" and data["node"] is None and data["prompt_id"] == prompt_id:
            return frames


def kinds(frames: list) -> list[str]:
    return ["<binary>" if isinstance(f, bytes) else f["type"] for f in frames]


async def test_a_prompt_runs_and_its_history_names_the_image_view_serves(comfy):
    async with aiohttp.ClientSession() as session:
        answer = await post_prompt(session, comfy.url, comfytoys.prompt(value=3.0, prefix="sub/gray"), client_id="me")
        assert set(answer) == {"prompt_id", "number", "node_errors"} and answer["node_errors"] == {}
        entry = await history_of(session, comfy.url, answer["prompt_id"])
        assert entry["prompt"] == [answer["number"], answer["prompt_id"], comfytoys.prompt(value=3.0, prefix="sub/gray"),
                                   {"client_id": "me"}, ["9"]]
        assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
        assert [m[0] for m in entry["status"]["messages"]] == ["execution_start", "execution_cached", "execution_success"]
        [image] = entry["outputs"]["9"]["images"]
        assert image["subfolder"] == "sub" and image["type"] == "output" and image["filename"].startswith("gray_")
        assert entry["meta"]["9"]["node_id"] == "9"
        async with session.get(f"{comfy.url}/view", params=image) as response:
            assert response.status == 200 and response.content_type == "image/png"
            assert await response.read() == png_bytes(8, 8, 6)  # value 3 + 3 steps
        async with session.get(f"{comfy.url}/api/history", params={"max_items": "5"}) as response:
            assert list(await response.json()) == [answer["prompt_id"]]
        job = await wait_for_status(session, comfy.url, answer["prompt_id"], "succeeded")  # the same job in /jobs
        assert job["outputs"]["9"]["images"][0]["url"] == f"/outputs/sub/{image['filename']}"


async def test_numbers_grow_and_front_goes_first(comfy):
    async with aiohttp.ClientSession() as session:
        first = await post_prompt(session, comfy.url, comfytoys.prompt(steps=40, pause=0.05))
        second = await post_prompt(session, comfy.url, comfytoys.prompt(value=2.0))
        front = await post_prompt(session, comfy.url, comfytoys.prompt(value=4.0), front=True)
        assert second["number"] > first["number"] and front["number"] < 0
        await wait_for_status(session, comfy.url, first["prompt_id"], "running")
        async with session.get(f"{comfy.url}/queue") as response:
            queue = await response.json()
        assert [item[1] for item in queue["queue_running"]] == [first["prompt_id"]]
        assert [item[1] for item in queue["queue_pending"]] == [front["prompt_id"], second["prompt_id"]]
        assert queue["queue_pending"][1][:2] == [second["number"], second["prompt_id"]]
        async with session.get(f"{comfy.url}/prompt") as response:
            assert await response.json() == {"exec_info": {"queue_remaining": 3}}


@pytest.mark.parametrize("change, error_type, node, problem", [
    (lambda p: p["2"]["inputs"].update(steps=20_000), "prompt_outputs_failed_validation", "2", "value_bigger_than_max"),
    (lambda p: p["2"]["inputs"].update(steps=0), "prompt_outputs_failed_validation", "2", "value_smaller_than_min"),
    (lambda p: p["2"]["inputs"].pop("value"), "prompt_outputs_failed_validation", "2", "required_input_missing"),
    (lambda p: p["2"]["inputs"].update(value=["7", 0]), "prompt_outputs_failed_validation", "2", "bad_linked_input"),
    (lambda p: p["2"]["inputs"].update(steps="many"), "prompt_outputs_failed_validation", "2", "invalid_input_type"),
])
async def test_invalid_prompts_get_comfyuis_400_with_errors_per_node(comfy, change, error_type, node, problem):
    prompt = comfytoys.prompt()
    change(prompt)
    async with aiohttp.ClientSession() as session:
        body = await post_prompt(session, comfy.url, prompt, status=400)
        assert body["error"]["type"] == error_type and set(body["error"]) == {"type", "message", "details", "extra_info"}
        assert list(body["node_errors"]) == [node]
        entry = body["node_errors"][node]
        assert entry["class_type"] == "ToySteps" and entry["dependent_outputs"] == ["9"]
        [error] = entry["errors"]
        assert error["type"] == problem and set(error) == {"type", "message", "details", "extra_info"}
        assert error["extra_info"]["input_name"] in ("steps", "value")
        async with session.get(f"{comfy.url}/queue") as response:
            assert await response.json() == {"queue_running": [], "queue_pending": []}


@pytest.mark.parametrize("body, error_type, message", [
    ({"client_id": "x"}, "no_prompt", "No prompt provided"),
    ({"prompt": {"graphflow": 1, "nodes": {}}}, "invalid_prompt", "API format"),
    ({"prompt": {"1": {"class_type": "KSamplerTurbo", "inputs": {}}}}, "invalid_prompt",
     "ComfyUI node 'KSamplerTurbo' (id 1) is not supported by graphflow"),
    ({"prompt": {"1": {"class_type": "ToyNumber", "inputs": {}}}}, "prompt_no_outputs", "Prompt has no outputs"),
])
async def test_prompts_that_are_no_runnable_prompt_say_why(comfy, body, error_type, message):
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{comfy.url}/api/prompt", json=body) as response:
            assert response.status == 400
            answer = await response.json()
    assert answer["error"]["type"] == error_type and message in answer["error"]["message"] + answer["error"]["details"]
    assert answer["node_errors"] == {}


async def test_the_websocket_tells_a_prompt_in_comfyuis_messages(comfy):
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{comfy.url}/ws?clientId=me") as ws:
            hello = json.loads((await ws.receive(timeout=15)).data)
            assert hello == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "me"}}
            previews = {"preview_method": "auto"}  # as ComfyUI, previews only when the prompt asks for them
            answer = await post_prompt(session, comfy.url, comfytoys.prompt(steps=2, previews=1), client_id="me",
                                       extra_data=previews)
            frames = await messages_until_done(ws, answer["prompt_id"])
            closing = json.loads((await ws.receive(timeout=15)).data)
            again = await post_prompt(session, comfy.url, comfytoys.prompt(steps=2, previews=1), client_id="me",
                                      extra_data=previews)
            cached = await messages_until_done(ws, again["prompt_id"])
            await ws.receive(timeout=15)  # its status
            quiet = await post_prompt(session, comfy.url, comfytoys.prompt(steps=2, previews=1, value=5.0), client_id="me")
            unasked = await messages_until_done(ws, quiet["prompt_id"])
    prompt_id = answer["prompt_id"]
    assert kinds(frames) == ["status", "execution_start", "status", "executing", "executing", "progress", "progress",
                             "executing", "<binary>", "executed", "execution_success", "executing"]
    assert [f["data"]["node"] for f in frames if not isinstance(f, bytes) and f["type"] == "executing"] == ["1", "2", "9", None]
    assert frames[5]["data"] == {"value": 1, "max": 2, "prompt_id": prompt_id, "node": "2"}
    assert struct.unpack(">II", frames[8][:8]) == (1, 2) and frames[8][8:] == png_bytes(4, 4, 0)
    executed = frames[9]["data"]
    assert executed["node"] == "9" and executed["prompt_id"] == prompt_id
    [image] = executed["output"]["images"]
    assert set(image) == {"filename", "subfolder", "type"}
    assert frames[1]["data"]["prompt_id"] == prompt_id and isinstance(frames[1]["data"]["timestamp"], int)
    # the same prompt again: everything comes from the cache, and the image is still announced
    assert closing == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}}}
    assert kinds(cached) == ["status", "execution_start", "status", "execution_cached", "executed", "execution_success",
                             "executing"]
    assert sorted(cached[3]["data"]["nodes"]) == ["1", "2", "9"] and cached[4]["data"]["output"] == executed["output"]
    assert "<binary>" not in kinds(unasked) and "executed" in kinds(unasked)


async def test_a_prompts_messages_go_to_its_client_only(comfy):
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{comfy.url}/api/ws?clientId=other") as other, \
                session.ws_connect(f"{comfy.url}/ws?clientId=me") as mine:
            await other.receive(timeout=15), await mine.receive(timeout=15)
            answer = await post_prompt(session, comfy.url, comfytoys.prompt(), client_id="me")
            await messages_until_done(mine, answer["prompt_id"])
            seen = []
            while len(seen) < 3:  # queued, started, finished: the queue changed three times
                seen.append(json.loads((await other.receive(timeout=15)).data))
    assert [message["type"] for message in seen] == ["status", "status", "status"]


async def test_a_client_reconnecting_mid_run_learns_the_node_executing(comfy):
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{comfy.url}/api/ws") as anonymous:
            hello = json.loads((await anonymous.receive(timeout=15)).data)
        assert hello["type"] == "status" and len(hello["data"]["sid"]) == 32  # a client id is made up for it
        answer = await post_prompt(session, comfy.url, comfytoys.prompt(steps=400, pause=0.05), client_id="me")
        job = await wait_for_status(session, comfy.url, answer["prompt_id"], "running")
        while not job["progress"]:
            job = await wait_for_status(session, comfy.url, answer["prompt_id"], "running")
        async with session.ws_connect(f"{comfy.url}/ws?clientId=me") as ws:
            first = json.loads((await ws.receive(timeout=15)).data)
            second = json.loads((await ws.receive(timeout=15)).data)
        async with session.post(f"{comfy.url}/interrupt") as response:
            assert response.status == 200
    assert first["type"] == "status" and first["data"]["status"]["exec_info"]["queue_remaining"] == 1
    assert second == {"type": "executing", "data": {"node": "2", "display_node": "2", "prompt_id": answer["prompt_id"]}}


async def test_interrupt_stops_the_running_prompt(comfy):
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{comfy.url}/ws?clientId=me") as ws:
            await ws.receive(timeout=15)
            answer = await post_prompt(session, comfy.url, comfytoys.prompt(steps=400, pause=0.05), client_id="me")
            await wait_for_status(session, comfy.url, answer["prompt_id"], "running")
            async with session.post(f"{comfy.url}/interrupt", json={"prompt_id": "another"}) as response:
                assert response.status == 200
            await asyncio.sleep(0.2)
            assert (await wait_for_status(session, comfy.url, answer["prompt_id"], "running"))["status"] == "running"
            async with session.post(f"{comfy.url}/api/interrupt") as response:
                assert response.status == 200
            frames = await messages_until_done(ws, answer["prompt_id"])
        [stopped] = [f for f in frames if not isinstance(f, bytes) and f["type"] == "execution_interrupted"]
        assert stopped["data"]["node_id"] == "2" and stopped["data"]["node_type"] == "ToySteps"
        assert stopped["data"]["executed"] == ["1"]
        entry = await history_of(session, comfy.url, answer["prompt_id"])
        assert entry["status"]["status_str"] == "error" and entry["status"]["messages"][-1][0] == "execution_interrupted"


async def test_a_failing_node_is_an_execution_error_and_a_history_entry_with_status_error(comfy):
    prompt = comfytoys.prompt(steps=3)
    prompt["2"]["inputs"]["fail_at"] = 2
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{comfy.url}/ws?clientId=me") as ws:
            await ws.receive(timeout=15)
            answer = await post_prompt(session, comfy.url, prompt, client_id="me")
            frames = await messages_until_done(ws, answer["prompt_id"])
        assert kinds(frames)[-2:] == ["execution_error", "executing"]
        error = frames[-2]["data"]
        assert (error["node_id"], error["node_type"], error["executed"]) == ("2", "ToySteps", ["1"])
        assert "step 2 fails, as asked" in error["exception_message"] and error["traceback"] == []
        entry = await history_of(session, comfy.url, answer["prompt_id"])
    assert (entry["status"]["status_str"], entry["status"]["completed"]) == ("error", False)
    event, data = entry["status"]["messages"][-1]
    assert event == "execution_error" and data["node_type"] == "ToySteps" and entry["outputs"] == {}


async def test_post_queue_deletes_and_clears_waiting_prompts_only(comfy):
    async with aiohttp.ClientSession() as session:
        running = await post_prompt(session, comfy.url, comfytoys.prompt(steps=400, pause=0.05))
        waiting = [await post_prompt(session, comfy.url, comfytoys.prompt(value=v)) for v in (1.0, 2.0, 4.0)]
        native = await submit(session, comfy.url, {"graphflow": 1, "nodes": {
            "n": {"type": "comfy.ToyNumber", "inputs": {}},
            "s": {"type": "comfy.ToySave", "inputs": {"value": {"from": "n", "output": "NUMBER"}}}}})
        await wait_for_status(session, comfy.url, running["prompt_id"], "running")
        delete = [waiting[1]["prompt_id"], running["prompt_id"], native]
        async with session.post(f"{comfy.url}/queue", json={"delete": delete}) as response:
            assert response.status == 200
        async with session.get(f"{comfy.url}/queue") as response:
            pending = [item[1] for item in (await response.json())["queue_pending"]]
        assert pending == [waiting[0]["prompt_id"], waiting[2]["prompt_id"]]  # /jobs' job is not ComfyUI's to list
        async with session.post(f"{comfy.url}/api/queue", json={"clear": True}) as response:
            assert response.status == 200
        async with session.get(f"{comfy.url}/queue") as response:
            queue = await response.json()
        assert queue["queue_pending"] == [] and [item[1] for item in queue["queue_running"]] == [running["prompt_id"]]
        assert (await wait_for_status(session, comfy.url, native, "queued", "running"))["status"] in ("queued", "running")
        async with session.post(f"{comfy.url}/queue", data="clear", headers={"Content-Type": "text/plain"}) as response:
            assert response.status == 415
        async with session.get(f"{comfy.url}/history/{waiting[1]['prompt_id']}") as response:
            assert await response.json() == {}  # taken off the queue before it ran: no history, as in ComfyUI


async def test_object_info_describes_the_pack_nodes_as_comfyui_does(comfy):
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{comfy.url}/object_info") as response:
            everything = await response.json()
        async with session.get(f"{comfy.url}/api/object_info/ToyWidgets") as response:
            one = await response.json()
        async with session.get(f"{comfy.url}/object_info/NoSuchNode") as response:
            assert await response.json() == {}
    assert sorted(everything) == ["ToyLoader", "ToyNumber", "ToySave", "ToySteps", "ToyWidgets"]
    info = one["ToyWidgets"]
    assert info == everything["ToyWidgets"]
    required = info["input"]["required"]
    assert required["seed"] == ["INT", {"default": 0, "min": 0, "max": 2**64 - 1, "step": 1}]
    assert required["width"] == ["INT", {"default": 512, "min": 16, "max": 4096, "step": 8}]
    assert required["cfg"] == ["FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}]
    assert required["sampler_name"] == [["euler", "heun"], {"default": "euler"}]
    assert required["text"] == ["STRING", {"default": "", "multiline": True}]
    assert required["flip"] == ["BOOLEAN", {"default": False}]
    assert info["input"]["optional"] == {"extra": ["NUMBER"]}
    assert info["input_order"] == {"required": ["seed", "width", "cfg", "sampler_name", "text", "flip"], "optional": ["extra"]}
    assert (info["output"], info["output_name"], info["output_is_list"]) == (["NUMBER", "STRING"], ["NUMBER", "TEXT"], [False, False])
    assert (info["name"], info["category"], info["output_node"]) == ("ToyWidgets", "toy/widgets", False)
    assert info["description"] == "Every kind of widget ComfyUI has." and info["display_name"] == "ToyWidgets"
    assert everything["ToySave"]["output_node"] is True and everything["ToySave"]["output"] == []
    assert everything["ToyNumber"]["input"]["required"]["value"][1]["tooltip"] == "a constant"


async def test_a_file_input_lists_the_files_its_node_would_find(start_server, tmp_path):
    (tmp_path / "models" / "toys").mkdir(parents=True)
    for name in ("b.toy", "a.toy", "readme.txt"):
        (tmp_path / "models" / "toys" / name).write_text("")
    comfy = start_server(registry=comfytoys.registry(), models_dir=tmp_path / "models")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{comfy.url}/object_info/ToyLoader") as response:
            required = (await response.json())["ToyLoader"]["input"]["required"]
    assert required["toy_name"] == [["a.toy", "b.toy"], {"tooltip": "a .toy file in models/toys/"}]
    assert required["scale"] == ["FLOAT", {"default": 1.0}]


def multipart(name: str, data: bytes, **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for key, value in fields.items():
        form.add_field(key, value)
    form.add_field("image", io.BytesIO(data), filename=name, content_type="image/png")
    return form


async def test_uploads_keep_the_clients_name_and_never_replace_other_bytes(comfy, data_dir):
    red, blue = png_bytes(4, 4, 10), png_bytes(4, 4, 200)
    async with aiohttp.ClientSession() as session:
        answers = []
        for data, extra in ((red, {}), (red, {}), (blue, {}), (blue, {"overwrite": "true"})):
            async with session.post(f"{comfy.url}/upload/image", data=multipart("face.png", data, subfolder="mine", **extra)) as response:
                assert response.status == 200
                answers.append(await response.json())
        assert answers[0] == {"name": "face.png", "subfolder": "mine", "type": "input"}
        assert [a["name"] for a in answers] == ["face.png", "face.png", "face (1).png", "face.png"]
        assert (data_dir / "uploads" / "mine" / "face.png").read_bytes() == blue
        async with session.get(f"{comfy.url}/view", params={"filename": "face (1).png", "subfolder": "mine", "type": "input"}) as response:
            assert response.status == 200 and await response.read() == blue
        for name, fields, status in (("face.html", {}, 400), ("face.png", {"subfolder": "../up"}, 400),
                                     ("face.png", {"type": "scratch"}, 400), ("face.png", {"type": "temp"}, 200)):
            async with session.post(f"{comfy.url}/upload/image", data=multipart(name, red, **fields)) as response:
                assert response.status == status, name
        async with session.post(f"{comfy.url}/upload/image", data=multipart("fake.png", b"not an image")) as response:
            assert response.status == 400 and "not an image" in (await response.json())["error"]


async def test_upload_mask_puts_the_masks_alpha_on_the_original(comfy, data_dir):
    from PIL import Image

    mask = io.BytesIO()
    Image.new("RGBA", (4, 4), (0, 0, 0, 77)).save(mask, format="PNG")
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{comfy.url}/upload/image", data=multipart("base.png", png_bytes(4, 4, 90))) as response:
            base = await response.json()
        ref = json.dumps({"filename": base["name"], "subfolder": "", "type": "input"})
        async with session.post(f"{comfy.url}/upload/mask", data=multipart("clipspace-mask.png", mask.getvalue(), original_ref=ref)) as response:
            assert response.status == 200
            answer = await response.json()
    with Image.open(data_dir / "uploads" / answer["name"]) as combined:
        assert combined.mode == "RGBA" and combined.getpixel((1, 1)) == (90, 90, 90, 77)


async def test_view_makes_previews_and_channels_as_comfyui_does(comfy, data_dir):
    from PIL import Image

    picture = io.BytesIO()
    Image.new("RGBA", (6, 4), (200, 100, 50, 128)).save(picture, format="PNG")
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{comfy.url}/upload/image", data=multipart("see-through.png", picture.getvalue())) as response:
            name = (await response.json())["name"]
        looks = {}
        for params in ({"preview": "jpeg;50"}, {"preview": "webp"}, {"channel": "rgb"}, {"channel": "a"}, {}):
            async with session.get(f"{comfy.url}/view", params={"filename": name, "type": "input", **params}) as response:
                assert response.status == 200, params
                looks[json.dumps(params)] = (response.content_type, Image.open(io.BytesIO(await response.read())))
        async with session.get(f"{comfy.url}/view", params={"filename": name, "type": "input", "channel": "x"}) as response:
            assert response.status == 400
    assert [(kind, image.format, image.mode) for kind, image in looks.values()] == [
        ("image/jpeg", "JPEG", "RGB"), ("image/webp", "WEBP", "RGBA"), ("image/png", "PNG", "RGB"),
        ("image/png", "PNG", "RGBA"), ("image/png", "PNG", "RGBA")]
    assert looks['{"channel": "rgb"}'][1].getpixel((0, 0)) == (200, 100, 50)
    assert looks['{"channel": "a"}'][1].getpixel((0, 0)) == (0, 0, 0, 128)


@pytest.mark.parametrize("params, status", [
    ({"filename": "../jobs.sqlite"}, 400), ({"filename": "x.png", "subfolder": "../.."}, 400),
    ({"filename": "nothing.png"}, 404), ({"subfolder": "a"}, 400), ({"filename": "x.png", "type": "scratch"}, 400),
    ({"filename": "x.png", "type": "temp"}, 404),
])
async def test_view_serves_only_files_inside_its_folders(comfy, params, status):
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{comfy.url}/view", params=params) as response:
            assert response.status == status


async def test_the_token_and_the_origin_check_guard_comfyuis_routes_too(start_server):
    server = start_server(registry=comfytoys.registry(), token="secret")
    async with aiohttp.ClientSession() as session:
        for method, path in (("POST", "/prompt"), ("GET", "/api/history"), ("GET", "/object_info"), ("GET", "/view")):
            async with session.request(method, f"{server.url}{path}") as response:
                assert response.status == 401, path
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await session.ws_connect(f"{server.url}/ws?clientId=me")
        headers = {"Authorization": "Bearer secret", "Origin": "http://evil.example"}
        async with session.post(f"{server.url}/prompt", json={"prompt": comfytoys.prompt()}, headers=headers) as response:
            assert response.status == 403
        async with session.post(f"{server.url}/prompt", json={"prompt": comfytoys.prompt()},
                                headers={"Authorization": "Bearer secret"}) as response:
            assert response.status == 200


async def test_graphflows_own_websocket_and_jobs_are_unchanged_beside_comfyuis(comfy):
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{comfy.url}/ws") as ws:
            answer = await post_prompt(session, comfy.url, comfytoys.prompt())
            first = json.loads((await ws.receive(timeout=15)).data)
        assert first == {"type": "queued", "job": answer["prompt_id"], "priority": 0}  # graphflow's own messages


@pytest.mark.timeout(120)
async def test_system_stats_and_embeddings(start_server, tmp_path):
    (tmp_path / "models" / "embeddings").mkdir(parents=True)
    for name in ("easynegative.safetensors", "style.pt", "notes.txt"):
        (tmp_path / "models" / "embeddings" / name).write_bytes(b"")
    comfy = start_server(registry=comfytoys.registry(), models_dir=tmp_path / "models")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{comfy.url}/system_stats") as response:
            stats = await response.json()
        async with session.get(f"{comfy.url}/api/embeddings") as response:
            embeddings = await response.json()
    assert {"os", "ram_total", "ram_free", "comfyui_version", "python_version", "pytorch_version"} <= set(stats["system"])
    [device] = stats["devices"]
    assert {"name", "type", "index", "vram_total", "vram_free"} <= set(device) and stats["system"]["ram_total"] > 0
    assert embeddings == ["easynegative", "style"]
