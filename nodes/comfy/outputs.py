"""ComfyUI's SaveImage and PreviewImage: graphflow's PNG writer (the "graphflow" and "parameters" chunks), plus
ComfyUI's "prompt" chunk, the workflow as an API prompt, when every node of it is ComfyUI's, so that ComfyUI
loads the picture back; pixels are cut to 8 bits as ComfyUI cuts them (truncated, not rounded)."""
import json

from pydantic import Field

from graphflow.context import RunContext
from graphflow.node import Input, node
from graphflow.outputs import OutputFile
from graphflow.registry import default_registry

from ..outputs import save_pngs
from ..values import IMAGE, Image
from .api_format import workflow_to_prompt

PREVIEW_PREFIX = "temp/ComfyUI_temp"  # ComfyUI writes previews to its temp folder; graphflow has the output folder


def comfyui_chunks(ctx: RunContext) -> dict[str, str]:
    if ctx.graph is None:
        return {}
    prompt = workflow_to_prompt(ctx.graph.document, default_registry())
    return {} if prompt is None else {"prompt": json.dumps(prompt, ensure_ascii=False)}


@node(name="comfy.SaveImage", output=True, category="comfy/image")
def SaveImage(
    images: Image = Input(IMAGE),
    filename_prefix: str = Field("ComfyUI", min_length=1, description="files are <prefix>_00001.png, ...; may include sub-folders"),
    *,
    ctx: RunContext,
) -> list[OutputFile]:
    """Save pictures as numbered PNGs in the output folder, with the workflow embedded (graphflow's and ComfyUI's)."""
    return save_pngs(images, filename_prefix, ctx, comfyui_chunks(ctx), truncate=True)


@node(name="comfy.PreviewImage", output=True, category="comfy/image")
def PreviewImage(images: Image = Input(IMAGE), *, ctx: RunContext) -> list[OutputFile]:
    """Save pictures for a look, under ``temp/`` in the output folder."""
    return save_pngs(images, PREVIEW_PREFIX, ctx, comfyui_chunks(ctx), truncate=True)
