"""The ComfyUI node pack: ComfyUI's node types (``comfy.X`` for ComfyUI's class ``X``, with its input names,
input order, widget defaults and output order) over graphflow's own functions, and readers of ComfyUI's
workflow formats (API prompts, UI workflows, the PNGs ComfyUI writes), so ComfyUI workflows run as they are.

Its modules import no ComfyUI code: names, orders, defaults and formulas are ComfyUI's, the code is graphflow's."""
from graphflow.registry import NodePack

from .api_format import read_api_prompt
from .ui_format import read_ui_workflow

# ComfyUI writes its API prompt into a PNG's "prompt" chunk (and its UI workflow into "workflow", which
# graphflow's documents module reads last: the API prompt is exactly what ran).
GRAPHFLOW_PACK = NodePack(document_readers=(read_api_prompt, read_ui_workflow), png_text_chunks=("prompt",))
