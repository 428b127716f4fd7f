"""PNGs written by ComfyUI (its "prompt" API chunk and "workflow" UI chunk) read as the workflow they ran."""
import json
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from graphflow.documents import read_file
from graphflow.registry import default_registry

FIXTURES = Path(__file__).resolve().parents[3] / "workflows" / "comfyui"


def comfyui_png(path, **chunks):
    info = PngInfo()
    for key, value in chunks.items():
        info.add_text(key, json.dumps(value))
    Image.new("RGB", (4, 4)).save(path, format="PNG", pnginfo=info)
    return path


def test_the_api_prompt_chunk_is_read_first_and_the_ui_workflow_alone_also_runs(tmp_path):
    registry = default_registry()
    api = json.loads((FIXTURES / "hires_fix_latent.api.json").read_text())
    ui = json.loads((FIXTURES / "hires_fix_latent.ui.json").read_text())
    expected = read_file(FIXTURES / "hires_fix_latent.api.json", registry).to_json()
    ui_only_prompt = dict(api, **{"3": dict(api["3"], inputs=dict(api["3"]["inputs"], seed=1))})
    both = comfyui_png(tmp_path / "both.png", prompt=api, workflow=dict(ui, nodes=ui["nodes"][:1]))
    assert read_file(both, registry).to_json() == expected  # "prompt" wins over the (here cut-down) UI workflow
    alone = comfyui_png(tmp_path / "ui.png", workflow=ui)
    assert read_file(alone, registry).to_json() == expected
    assert read_file(comfyui_png(tmp_path / "p.png", prompt=ui_only_prompt), registry).nodes["3"].inputs["seed"] == 1
