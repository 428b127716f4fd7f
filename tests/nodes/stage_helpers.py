"""Helpers for the Stable Diffusion stage-node tests (text, latent, sampling, vae, image, parity)."""
from __future__ import annotations

import torch

from nodes.sampling import SAMPLERS, build_scheduler


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
