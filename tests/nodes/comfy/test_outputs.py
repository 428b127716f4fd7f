"""comfy.SaveImage and PreviewImage: graphflow's chunks, ComfyUI's "prompt" chunk for all-ComfyUI workflows, and
ComfyUI's 8-bit cut (truncation)."""
import json

import torch
from PIL import Image as PILImage

from graphflow.context import RunContext
from graphflow.provenance import Provenance
from nodes.comfy.outputs import PreviewImage, SaveImage
from nodes.values import Image
from tests.nodes.runctx import run_node

from .toypack import txt2img_prompt


class Document:
    """Stands for the Provenance an output node gets: only the document matters here."""

    def __init__(self, document):
        self.document, self.nodes, self.target = document, {}, "9"


def comfy_document():
    from graphflow.registry import default_registry
    from nodes.comfy.api_format import prompt_to_workflow

    prompt = {"5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
              "9": {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}}}
    return prompt, prompt_to_workflow(prompt, "p", default_registry()).to_json()


def test_save_image_writes_graphflows_document_and_comfyuis_prompt(stage_ctx, monkeypatch):
    ctx, _ = stage_ctx
    prompt, document = comfy_document()
    monkeypatch.setattr("nodes.outputs.describe", lambda graph: None)  # no graphflow generation to describe here
    ctx.graph = Document(document)
    [saved] = run_node(SaveImage, ctx=ctx, images=Image(pixels=torch.full((1, 2, 2, 3), 0.999)))
    assert saved.filename == "ComfyUI_00001.png"
    with PILImage.open(ctx.settings.output_dir / saved.filename) as png:
        assert json.loads(png.text["graphflow"]) == document
        again = json.loads(png.text["prompt"])
        assert {k: (v["class_type"], v["inputs"]) for k, v in again.items()} == {
            k: (v["class_type"], v["inputs"]) for k, v in prompt.items()}
        assert png.getpixel((0, 0)) == (254, 254, 254)  # 0.999 * 255 = 254.7, cut as ComfyUI cuts it


def test_a_workflow_with_graphflow_nodes_gets_no_prompt_chunk(stage_ctx, monkeypatch):
    ctx, _ = stage_ctx
    _, document = comfy_document()
    document["nodes"]["5"]["type"] = "EmptyLatent"
    monkeypatch.setattr("nodes.outputs.describe", lambda graph: None)
    ctx.graph = Document(document)
    [saved] = run_node(PreviewImage, ctx=ctx, images=Image(pixels=torch.zeros(1, 2, 2, 3)))
    assert saved.filename == "temp/ComfyUI_temp_00001.png"
    with PILImage.open(ctx.settings.output_dir / saved.filename) as png:
        assert "prompt" not in png.text and "graphflow" in png.text
