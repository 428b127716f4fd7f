"""A few stand-in ComfyUI node types, named as the pack names them, for format tests that need no torch."""
from pydantic import Field

from graphflow.node import Input, node
from graphflow.registry import Registry


@node(name="comfy.Loader", outputs={"MODEL": "MODEL", "CLIP": "CLIP", "VAE": "VAE"})
def Loader(ckpt_name: str):
    return 1, 2, 3


@node(name="comfy.Sampler", outputs={"LATENT": "LATENT"})
def Sampler(model=Input("MODEL"), seed: int = Field(0, ge=0), steps: int = Field(20, ge=1), cfg: float = 8.0,
            latent_image=Input("LATENT")):
    return 4


@node(name="comfy.Empty", outputs={"LATENT": "LATENT"})
def Empty(width: int = Field(512, ge=16), height: int = Field(512, ge=16), batch_size: int = Field(1, ge=1)):
    return 5


@node(name="comfy.Decode", outputs={"IMAGE": "IMAGE"})
def Decode(samples=Input("LATENT"), vae=Input("VAE")):
    return 6


@node(name="comfy.Save", output=True)
def Save(images=Input("IMAGE"), filename_prefix: str = "ComfyUI"):
    return {}


@node(name="comfy.Shift", outputs={"LATENT": "LATENT"})
def Shift(model=Input("MODEL"), samples=Input("LATENT"), amount: int = 1):
    return 8


@node(name="Plain", outputs={"LATENT": "LATENT"})
def Plain(width: int = 8):
    return 7


def registry() -> Registry:
    reg = Registry()
    for fn in (Loader, Sampler, Empty, Decode, Save, Shift, Plain):
        reg.add(fn.__graphflow_node__)
    return reg


def txt2img_prompt() -> dict:
    """An API prompt over the stand-ins, shaped like ComfyUI's default txt2img."""
    return {
        "4": {"class_type": "Loader", "inputs": {"ckpt_name": "v1-5.safetensors"}, "_meta": {"title": "Load Checkpoint"}},
        "5": {"class_type": "Empty", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        "3": {"class_type": "Sampler", "inputs": {"model": ["4", 0], "seed": 156680208700286, "steps": 20, "cfg": 8.0,
                                                   "latent_image": ["5", 0]}},
        "8": {"class_type": "Decode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "Save", "inputs": {"images": ["8", 0], "filename_prefix": "ComfyUI"}},
    }


def ui_node(node_id: int, kind: str, widgets=(), inputs=(), outputs=(), **extra) -> dict:
    """A UI-format node: ``inputs`` as (name, type, link id), ``outputs`` as (name, type)."""
    return {"id": node_id, "type": kind, "mode": 0, "widgets_values": list(widgets),
            "inputs": [{"name": n, "type": t, "link": link} for n, t, link in inputs],
            "outputs": [{"name": n, "type": t, "links": []} for n, t in outputs], **extra}


def txt2img_ui() -> dict:
    """A UI workflow over the stand-ins, shaped like ComfyUI's default txt2img (links: [id, from, slot, to, slot, type])."""
    return {
        "last_node_id": 9, "last_link_id": 4, "version": 0.4,
        "nodes": [
            ui_node(4, "Loader", ["v1-5.safetensors"], outputs=[("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")],
                    title="Load Checkpoint"),
            ui_node(5, "Empty", [512, 512, 1], outputs=[("LATENT", "LATENT")]),
            ui_node(3, "Sampler", [156680208700286, "randomize", 20, 8], inputs=[("model", "MODEL", 1), ("latent_image", "LATENT", 2)],
                    outputs=[("LATENT", "LATENT")]),
            ui_node(8, "Decode", [], inputs=[("samples", "LATENT", 3), ("vae", "VAE", 4)], outputs=[("IMAGE", "IMAGE")]),
            ui_node(9, "Save", ["ComfyUI"], inputs=[("images", "IMAGE", 5)]),
        ],
        "links": [[1, 4, 0, 3, 0, "MODEL"], [2, 5, 0, 3, 1, "LATENT"], [3, 3, 0, 8, 0, "LATENT"], [4, 4, 2, 8, 1, "VAE"],
                  [5, 8, 0, 9, 0, "IMAGE"]],
        "groups": [], "config": {}, "extra": {},
    }
