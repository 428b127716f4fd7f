"""Stand-in ComfyUI node types (``comfy.X``) in pure Python, so the ComfyUI API tests run real jobs without torch.

Also a node pack of its own: ``GRAPHFLOW_NODES=nodes.comfy,tests.server.comfytoys`` starts ``python server.py``
with ComfyUI's API over these nodes (tests/server/test_comfy_client.py)."""
from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Literal

from pydantic import Field

from graphflow.errors import NodeInputError
from graphflow.node import FileProblem, Input, node
from graphflow.outputs import OutputFile
from graphflow.registry import Registry

from .toyimages import png_bytes

@node(name="comfy.ToyNumber", outputs={"NUMBER": "NUMBER"}, category="toy/numbers")
def ToyNumber(value: float = Field(1.0, ge=-1000, le=1000, description="a constant")):
    """A constant number."""
    return value


@node(name="comfy.ToySteps", outputs={"NUMBER": "NUMBER"}, category="toy/numbers")
def ToySteps(value=Input("NUMBER"), steps: int = Field(3, ge=1, le=10_000),
             pause: float = Field(0.0, ge=0.0, le=1.0, description="seconds per step, to act on a running prompt"),
             fail_at: int = Field(0, ge=0, description="the step that fails (0: none)"), *, ctx):
    """Reports progress once per step; stops when interrupted."""
    for step in range(steps):
        if step + 1 == fail_at:
            raise NodeInputError("fail_at", f"step {fail_at} fails, as asked", received=fail_at)
        if pause:
            threading.Event().wait(pause)
        ctx.check_cancelled()
        ctx.progress(step + 1, steps)
    return value + steps


@node(name="comfy.ToyWidgets", outputs={"NUMBER": "NUMBER", "TEXT": "STRING"}, category="toy/widgets")
def ToyWidgets(seed: int = Field(0, ge=0, le=2**64 - 1), width: int = Field(512, ge=16, le=4096, multiple_of=8),
               cfg: float = Field(8.0, ge=0.0, le=100.0, json_schema_extra={"step": 0.1, "round": 0.01}),
               sampler_name: Literal["euler", "heun"] = "euler", text: str = Field("", json_schema_extra={"multiline": True}),
               flip: bool = False, extra=Input("NUMBER", optional=True)):
    """Every kind of widget ComfyUI has."""
    return float(width), text


@node(name="comfy.ToySave", output=True, category="toy/image")
def ToySave(value=Input("NUMBER"), filename_prefix: str = "ComfyUI", width: int = Field(8, ge=1, le=256),
            previews: int = Field(0, ge=0, le=100), *, ctx):
    """Writes one gray PNG under ``filename_prefix`` (a sub-folder when it has one), after ``previews`` previews."""
    for step in range(previews):
        ctx.preview(png_bytes(4, 4, step), step)
    name = f"{filename_prefix}_{uuid.uuid4().hex[:8]}.png"
    target = Path(ctx.settings.output_dir) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(png_bytes(width, width, int(value) % 256))
    return [OutputFile("image", name, {"width": width, "height": width})]


def _toy_files(literals: dict, settings) -> list[FileProblem]:
    folder = Path(settings.models_dir) / "toys"
    names = tuple(sorted(p.name for p in folder.glob("*.toy"))) if folder.is_dir() else ()
    name = literals["toy_name"]
    return [] if name in names else [FileProblem("toy_name", f"no toy named {name!r}", name, names)]


@node(name="comfy.ToyLoader", outputs={"NUMBER": "NUMBER"}, category="toy/loaders", preflight=_toy_files)
def ToyLoader(toy_name: str = Field(description="a .toy file in models/toys/"), scale: float = 1.0):
    """A file input, as ComfyUI's loaders have: its value is the length of the name."""
    return scale * len(toy_name)


def registry() -> Registry:
    """These nodes with the ComfyUI pack's reader and HTTP API (and no other node)."""
    import nodes.comfy
    from nodes.comfy import http_api

    reg = Registry()
    for function in (ToyNumber, ToySteps, ToyWidgets, ToySave, ToyLoader):
        reg.add(function.__graphflow_node__)
    reg.add_pack(nodes.comfy.GRAPHFLOW_PACK)
    reg.add_pack(http_api.GRAPHFLOW_PACK)
    return reg


def prompt(value: float = 3.0, steps: int = 3, previews: int = 0, prefix: str = "ComfyUI", pause: float = 0.0) -> dict:
    """number → steps → save: an API prompt over these nodes (with the titles ComfyUI's UI writes into _meta)."""
    return {
        "1": {"class_type": "ToyNumber", "inputs": {"value": value}, "_meta": {"title": "Number"}},
        "2": {"class_type": "ToySteps", "inputs": {"value": ["1", 0], "steps": steps, "pause": pause},
              "_meta": {"title": "Steps"}},
        "9": {"class_type": "ToySave", "inputs": {"value": ["2", 0], "filename_prefix": prefix, "previews": previews},
              "_meta": {"title": "Save Image"}},
    }
