"""Helpers for the Stable Diffusion stage-node tests (text, latent, sampling, vae, image, parity)."""
from __future__ import annotations

from typing import Any

import torch

from graphflow.node import spec_of
from nodes.sampling import SAMPLERS, build_scheduler


def call(fn, ctx=None, **inputs: Any):
    """Call a node function as the engine does: literal inputs validated by its pydantic model (which also
    fills in defaults), socket inputs passed as given, ``ctx`` handed over. Returns the single output value
    (a tuple for several outputs, the UI dict for an output node)."""
    spec = spec_of(fn)
    sockets = {k: v for k, v in inputs.items() if k in spec.sockets}
    literals = spec.literals.model_validate({k: v for k, v in inputs.items() if k not in spec.sockets}).model_dump()
    result = spec.call(sockets, literals, ctx)
    if spec.output_node:
        return result
    return result[0] if len(result) == 1 else result


def pipeline(components: dict, sampler: str, img2img: bool = False):
    """A diffusers pipeline over the same component objects, its scheduler built as Schedule builds it."""
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

    cls = StableDiffusionImg2ImgPipeline if img2img else StableDiffusionPipeline
    scheduler = build_scheduler(dict(components["scheduler"].config), SAMPLERS[sampler])
    pipe = cls(**{**components, "scheduler": scheduler}, safety_checker=None, feature_extractor=None,
               requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def channels_last(images: torch.Tensor) -> torch.Tensor:
    """diffusers' output_type="pt" images (B, 3, H, W) in graphflow's IMAGE layout (B, H, W, 3)."""
    return images.permute(0, 2, 3, 1)
