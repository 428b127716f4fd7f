"""The two sides the rows compare: graphflow (an Engine running the shipped workflows, edited) and diffusers
(its pipelines over the very same module objects).

Workflows are the files in ``workflows/`` with a few literals changed (checkpoint, size, steps, seed). For the
overhead rows the final SaveImage is swapped for :func:`KeepImage`, an output node that only reports the image
shape, so both sides stop at float pixels; what SaveImage's PNG encoding costs is measured on its own.
"""
# No "from __future__ import annotations": the node decorator reads the parameter annotations as objects.
import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image as PILImage

from graphflow.cache import ResultCache
from graphflow.context import Settings
from graphflow.execute import Engine
from graphflow.node import Input, node, spec_of
from graphflow.plan import make_plan
from graphflow.registry import Registry, discover
from nodes.values import IMAGE, Image

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "workflows"
TOLERANCE = 1e-5  # max |graphflow − diffusers| per pixel, as in tests/nodes/test_parity.py


@node(output=True, category="bench")
def KeepImage(images: Image = Input(IMAGE)) -> dict:
    """Bench-only output node: ends a workflow at the decoded float pixels without encoding a PNG."""
    return {"shape": list(images.pixels.shape)}


def bench_registry() -> Registry:
    """The node library plus KeepImage (a registry of its own: the process-wide default one is left alone)."""
    registry = discover()
    registry.add(spec_of(KeepImage))
    return registry


def make_engine(settings: Settings, registry: Registry | None = None, keep_values: bool = True) -> Engine:
    """An engine with the mutation guard OFF (it hashes every input twice per node: a test-suite tool).

    ``keep_values=False`` gives a value budget of 0 bytes: every node but the model loaders reruns on every run
    (loaded weights live in the separate model pool), so each run does the whole computation again."""
    cache = ResultCache() if keep_values else ResultCache(value_budget=0)
    return Engine(registry or bench_registry(), settings, cache=cache, check_mutations=False)


def fresh_values(engine: Engine, workflow: dict) -> None:
    """Give ``engine`` an empty cache that still holds the models ``workflow`` loads (as if only they were warm)."""
    old = engine.cache
    new = ResultCache(old.value_budget, old.max_models)
    plan = make_plan(engine.validate(workflow), engine.settings)
    for node_id, key in plan.keys.items():
        if engine.registry.get(workflow["nodes"][node_id]["type"]).pool == "model":
            outputs = old.get(key)
            if outputs is not None:
                new.put(key, outputs, pool="model")
    engine.cache = new


def load_workflow(name: str) -> dict:
    return json.loads((WORKFLOWS / f"{name}.json").read_text())


def edited(workflow: dict, changes: dict[str, dict[str, Any]], keep_image: str | None = None) -> dict:
    """A copy of ``workflow`` with literals changed (``{node: {input: value}}``); ``keep_image`` names the
    SaveImage node to replace with KeepImage."""
    result = copy.deepcopy(workflow)
    for node_id, inputs in changes.items():
        result["nodes"][node_id]["inputs"].update(inputs)
    if keep_image is not None:
        save = result["nodes"][keep_image]
        result["nodes"][keep_image] = {"type": "KeepImage", "inputs": {"images": save["inputs"]["images"]}}
    return result


def txt2img(ckpt: str, size: int, steps: int, seed: int, keep: bool = True) -> dict:
    return edited(load_workflow("txt2img"), {"ckpt": {"name": ckpt}, "empty": {"width": size, "height": size},
                                             "schedule": {"steps": steps}, "noise": {"seed": seed}},
                  "save" if keep else None)


def img2img(ckpt: str, image: str, steps: int, seed: int, keep: bool = True) -> dict:
    return edited(load_workflow("img2img"), {"ckpt": {"name": ckpt}, "image": {"name": image},
                                             "schedule": {"steps": steps}, "noise": {"seed": seed}},
                  "save" if keep else None)


def hires_fix(ckpt: str, size: int, steps: int, seed2: int = 43) -> dict:
    """The shipped latent hires fix (first pass at ``size``, ×2 second pass at denoise 0.5), SaveImage kept."""
    return edited(load_workflow("hires_fix"), {"ckpt": {"name": ckpt}, "empty": {"width": size, "height": size},
                                               "schedule": {"steps": steps}, "schedule2": {"steps": steps},
                                               "noise2": {"seed": seed2}})


def literal(workflow: dict, node_id: str, name: str) -> Any:
    return workflow["nodes"][node_id]["inputs"][name]


def test_picture(path: Path, size: int) -> str:
    """A deterministic RGB picture (gradients and a disc) saved as PNG for img2img; returns its file name."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        y, x = np.mgrid[0:size, 0:size] / size
        disc = ((x - 0.5) ** 2 + (y - 0.5) ** 2 < 0.1).astype(np.float64)
        rgb = np.stack([x, y, 0.3 + 0.7 * disc], axis=-1)
        PILImage.fromarray((rgb * 255).round().astype(np.uint8)).save(path)
    return path.name


# -------------------------------------------------------------------------------------------------- diffusers


class DiffusersSide:
    """diffusers' txt2img and img2img pipelines over the module objects a LoadCheckpoint run returned."""

    def __init__(self, loaded: dict[str, Any], sampler: str):
        from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

        from nodes.sampling import SAMPLERS, build_scheduler

        model, clip, vae = loaded["model"], loaded["clip"], loaded["vae"]
        scheduler = build_scheduler(dict(model.scheduler_config), SAMPLERS[sampler], model.prediction_type)
        parts = dict(unet=model.unet, vae=vae.vae, text_encoder=clip.text_encoder, tokenizer=clip.tokenizer,
                     scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        self.txt2img_pipe = StableDiffusionPipeline(**parts)
        self.img2img_pipe = StableDiffusionImg2ImgPipeline(**parts)
        for pipe in (self.txt2img_pipe, self.img2img_pipe):
            pipe.set_progress_bar_config(disable=True)

    def txt2img(self, workflow: dict) -> torch.Tensor:
        """The same generation as the txt2img workflow; (B, H, W, 3) float pixels."""
        images = self.txt2img_pipe(
            literal(workflow, "positive", "text"), negative_prompt=literal(workflow, "negative", "text"),
            height=literal(workflow, "empty", "height"), width=literal(workflow, "empty", "width"),
            num_inference_steps=literal(workflow, "schedule", "steps"), guidance_scale=literal(workflow, "sample", "cfg"),
            generator=torch.Generator("cpu").manual_seed(literal(workflow, "noise", "seed")), output_type="pt").images
        return images.permute(0, 2, 3, 1)

    def img2img(self, workflow: dict, input_dir: Path) -> torch.Tensor:
        """The img2img workflow's generation. The picture is read with PIL and prepared by the pipeline's own image
        processor; it is encoded to the latent distribution's mode (what VAEEncode does, so both sides start from
        the same latents) and handed to the pipeline as (contiguous) latents."""
        pipe = self.img2img_pipe
        with PILImage.open(input_dir / literal(workflow, "image", "name")) as opened:
            picture = opened.convert("RGB")
        pixels = pipe.image_processor.preprocess(picture)
        with torch.no_grad():
            latents = pipe.vae.encode(pixels).latent_dist.mode() * pipe.vae.config.scaling_factor
        # The processor's pixels are channels-last in memory, so are the encoded latents; VAEEncode hands on
        # contiguous ones (see nodes/vae.py). Same layout here, else the UNet sums in another order (~1e-5 off).
        latents = latents.contiguous()
        images = pipe(
            literal(workflow, "positive", "text"), image=latents, strength=literal(workflow, "schedule", "denoise"),
            negative_prompt=literal(workflow, "negative", "text"), num_inference_steps=literal(workflow, "schedule", "steps"),
            guidance_scale=literal(workflow, "sample", "cfg"),
            generator=torch.Generator("cpu").manual_seed(literal(workflow, "noise", "seed")), output_type="pt").images
        return images.permute(0, 2, 3, 1)


def same_pixels(ours: torch.Tensor, theirs: torch.Tensor) -> dict[str, Any]:
    """Assert graphflow's and diffusers' pixels agree to TOLERANCE; returns the difference for the record."""
    if ours.shape != theirs.shape:
        raise AssertionError(f"graphflow gave {tuple(ours.shape)} pixels, diffusers {tuple(theirs.shape)}")
    diff = (ours - theirs).abs().max().item()
    if diff > TOLERANCE:
        raise AssertionError(f"graphflow and diffusers differ by {diff:.3g} > {TOLERANCE} — the comparison would be unfair")
    return {"max_abs_diff": diff}
