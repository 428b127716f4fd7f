"""A ComfyUI client library we did not write (comfy-api-simplified, from the package index) drives ``python server.py``:
it uploads an image, submits a prompt, waits on the WebSocket for it to finish and fetches the image it made: over
toy ComfyUI nodes (fast), then ComfyUI's default txt2img on the real nodes and the built-in tiny model."""
from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from . import comfytoys
from .test_entry import REPO, free_port
from .toyimages import png_bytes

comfy_api_simplified = pytest.importorskip("comfy_api_simplified")
TOY_PACK = "nodes.comfy,tests.server.comfytoys"


@contextlib.contextmanager
def served(tmp_path, nodes: str | None = TOY_PACK):
    """``python server.py`` on a free port (``nodes``: GRAPHFLOW_NODES; None: the whole node library); its URL."""
    port = free_port()
    env = {**os.environ, "GRAPHFLOW_TOKEN": "",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.pop("GRAPHFLOW_NODES", None)
    if nodes:
        env["GRAPHFLOW_NODES"] = nodes
    process = subprocess.Popen([sys.executable, "server.py", "--port", str(port), "--data-dir", str(tmp_path / "d"),
                                "--models-dir", str(tmp_path / "models")],
                               cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
                    json.load(response)
                break
            except OSError:
                assert process.poll() is None, process.stderr.read()
                time.sleep(0.1)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0 and "Traceback" not in stderr, stderr


@pytest.fixture
def server_py(tmp_path):
    """``python server.py`` with the ComfyUI pack's API over the toy ComfyUI nodes."""
    with served(tmp_path) as url:
        yield url


@pytest.mark.timeout(120)
def test_a_comfyui_client_library_runs_a_prompt_and_fetches_its_image(server_py, tmp_path):
    from comfy_api_simplified import ComfyApiWrapper, ComfyWorkflowWrapper

    api = ComfyApiWrapper(server_py)
    picture = tmp_path / "input.png"
    picture.write_bytes(png_bytes(6, 6, 33))
    uploaded = api.upload_image(str(picture))
    assert uploaded == {"name": "input.png", "subfolder": "default_upload_folder", "type": "input"}
    assert api.get_image(uploaded["name"], uploaded["subfolder"], uploaded["type"]) == picture.read_bytes()

    workflow = ComfyWorkflowWrapper(comfytoys.prompt(value=10.0, steps=20, pause=0.02))
    workflow.set_node_param("Steps", "steps", 25)  # the library edits the prompt by node title, as users do
    images = api.queue_and_wait_images(workflow, "Save Image")  # waits for executing(node=None) on /ws?clientId=
    [(filename, data)] = images.items()
    assert filename.startswith("ComfyUI_") and data == png_bytes(8, 8, 35)  # 10 + 25 steps

    assert api.get_queue() == {"queue_running": [], "queue_pending": []}
    object_info = api.get_object_info("ToySteps")
    assert object_info["ToySteps"]["input"]["required"]["steps"][0] == "INT"


TXT2IMG = {  # ComfyUI's default txt2img as its "Export (API)" writes it, on the built-in tiny model at test size
    "3": {"class_type": "KSampler", "_meta": {"title": "KSampler"},
          "inputs": {"seed": 42, "steps": 2, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
                     "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
    "4": {"class_type": "CheckpointLoaderSimple", "_meta": {"title": "Load Checkpoint"},
          "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "_meta": {"title": "Empty Latent Image"},
          "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode", "_meta": {"title": "Positive"}, "inputs": {"text": "a red circle", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "_meta": {"title": "Negative"}, "inputs": {"text": "", "clip": ["4", 1]}},
    "8": {"class_type": "VAEDecode", "_meta": {"title": "VAE Decode"}, "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "_meta": {"title": "Save Image"},
          "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
}


@pytest.mark.timeout(300)
def test_the_client_runs_comfyuis_default_txt2img_on_the_real_nodes(tmp_path):
    from comfy_api_simplified import ComfyApiError, ComfyApiWrapper, ComfyWorkflowWrapper
    from PIL import Image

    with served(tmp_path, nodes=None) as url:  # the whole node library, as a user starts it
        api = ComfyApiWrapper(url)
        workflow = ComfyWorkflowWrapper(json.loads(json.dumps(TXT2IMG)))
        with pytest.raises(ComfyApiError, match="400"):  # v1-5-pruned-emaonly is not in this models folder
            api.queue_prompt(workflow)
        workflow.set_node_param("Load Checkpoint", "ckpt_name", "tiny-sd")  # the built-in model, by name
        [(filename, data)] = api.queue_and_wait_images(workflow, "Save Image").items()
        history = next(iter(requests_json(f"{url}/history").values()))
    with Image.open(io.BytesIO(data)) as image:
        # ComfyUI's latent is width/8 on a side; the tiny model's VAE doubles it: 64 → 8 → 16 pixels
        assert image.size == (16, 16) and filename.startswith("ComfyUI_")  # a file from the history, no preview
        prompt = json.loads(image.text["prompt"])  # ComfyUI's own PNG chunk: the file loads back into ComfyUI
    assert {node: entry["class_type"] for node, entry in prompt.items()} == \
        {node: entry["class_type"] for node, entry in TXT2IMG.items()}
    assert history["status"]["status_str"] == "success" and history["outputs"]["9"]["images"][0]["filename"] == filename


def requests_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)
