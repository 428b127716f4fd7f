"""A ComfyUI client library we did not write (comfy-api-simplified, from the package index) drives ``python server.py``:
it uploads an image, submits a prompt, waits on the WebSocket for it to finish and fetches the image it made."""
from __future__ import annotations

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


@pytest.fixture
def server_py(tmp_path):
    """``python server.py`` with the ComfyUI pack's API over the toy ComfyUI nodes; yields its URL."""
    port = free_port()
    env = {**os.environ, "GRAPHFLOW_NODES": "nodes.comfy,tests.server.comfytoys", "GRAPHFLOW_TOKEN": "",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen([sys.executable, "server.py", "--port", str(port), "--data-dir", str(tmp_path / "d")],
                               cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
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
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0 and "Traceback" not in stderr, stderr


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
