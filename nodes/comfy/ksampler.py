"""comfy.KSampler and comfy.KSamplerAdvanced: ComfyUI's sampling, step for step, over graphflow's MODEL and LATENT.

What runs (ComfyUI's ``common_ksampler`` → ``KSampler.sample``):

1. noise: ``torch.randn`` of the latent's shape from a CPU generator seeded with the seed (zeros when
   KSamplerAdvanced's add_noise is "disable");
2. sigmas: the scheduler's schedule from the model's own alphas_cumprod, extended for denoise < 1 and cut to
   start_at_step / end_at_step (nodes/ksigmas.py);
3. start: ``latent + noise·sigma_0`` (``noise·sqrt(1 + sigma_0²)`` when sigma_0 is the model's highest);
4. the sampler (nodes/ksamplers.py) over the guided denoiser (nodes/comfy/guidance.py), with per-step noise
   from a generator seeded with seed + 1 (ancestral samplers) or a Brownian tree seeded with the seed (SDE).

graphflow's LATENT holds latents already multiplied by the VAE's scaling factor, which is exactly what
ComfyUI samples on (it scales its unscaled latents on the way in and back on the way out), so the numbers
are the same. A latent with a noise mask (SetLatentNoiseMask) is inpainted the ComfyUI way: outside the
mask the input is the original latent noised to the current sigma and the prediction is the original. A
9-channel inpainting UNet also reads the mask and the masked picture's latents (nodes/comfy/inpaint.py).
"""
from __future__ import annotations

import math
import time
from typing import Literal

import torch
from pydantic import Field

from graphflow.context import RunContext
from graphflow.errors import NodeInputError
from graphflow.node import Input, node
from graphflow.seeds import RANDOM, seed_type

from ..ksamplers import KSAMPLERS
from ..ksigmas import (SCHEDULER_NAMES, DiscreteSigmas, brownian_noise_sampler, default_noise_sampler, initial_noise,
                       ksampler_sigmas, trim_sigmas)
from ..preview import preview_png
from ..values import CONDITIONING, LATENT, MODEL, Conditioning, Latent, Model
from .guidance import ComfyDenoiser, InpaintDenoiser
from .inpaint import InpaintConcat, concat_channels

SamplerName = Literal[tuple(KSAMPLERS)]
SchedulerName = Literal[SCHEDULER_NAMES]
ComfySeed = seed_type(random=(RANDOM,))  # ComfyUI's 0 .. 2**64-1; "random" draws one per run
MAX_STEPS = 10000
PREVIEW_EVERY_S = 0.5  # live previews of the prediction: cheap, but not worth a PNG every step


def sample_latent(model: Model, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
                  positive: Conditioning, negative: Conditioning, latent: Latent, ctx: RunContext, *,
                  denoise: float = 1.0, add_noise: bool = True, start_step: int | None = None,
                  last_step: int | None = None, force_full_denoise: bool = False) -> Latent:
    """ComfyUI's common_ksampler over graphflow values; the result keeps the latent's mask and paste-back."""
    inpainting = _check_inputs(model, positive, negative, latent)
    clean = latent.samples.to(torch.float32)
    if add_noise:
        noise = initial_noise(tuple(clean.shape), seed, latent.batch_index)
    else:
        noise = torch.zeros(clean.shape, dtype=torch.float32)
    model_sigmas = DiscreteSigmas.from_config(model.scheduler_config)
    sigmas = ksampler_sigmas(model_sigmas, scheduler, sampler_name, steps, denoise)
    sigmas = trim_sigmas(sigmas, start_step, last_step, force_full_denoise)
    if sigmas is None or len(sigmas) == 0:
        return _result(latent, latent.samples)

    device = model.device
    clean, noise, sigmas = clean.to(device), noise.to(device), sigmas.to(device)
    inpaint = InpaintConcat.of(latent.replace(samples=clean)) if inpainting else None
    denoiser = ComfyDenoiser(model, positive, negative, cfg, inpaint)
    if latent.noise_mask is not None:
        mask = latent.noise_mask.to(device, torch.float32).expand(clean.shape[0], clean.shape[1], -1, -1)
        # ComfyUI's "ddim" keeps the unmasked part with fresh noise from seed + 1 instead of the initial noise
        kept_noise = initial_noise(tuple(clean.shape), (seed + 1) % 2**64).to(device) if sampler_name == "ddim" else noise
        denoiser = InpaintDenoiser(denoiser, clean, kept_noise, mask)
    x = _noised(clean, noise, sigmas[0], model_sigmas)
    spec = KSAMPLERS[sampler_name]
    extra = {}
    if spec.noise == "default":
        extra["noise_sampler"] = default_noise_sampler(x, seed)
    elif spec.noise == "brownian" and len(sigmas) > 1:
        extra["noise_sampler"] = brownian_noise_sampler(x, sigmas, seed)
    total = len(sigmas) - 1
    last_preview = [time.monotonic()]

    def progress(i: int, _x, denoised) -> None:
        # ComfyUI shows the current prediction as a latent-RGB preview; at most every PREVIEW_EVERY_S here
        if i + 1 < total and time.monotonic() - last_preview[0] >= PREVIEW_EVERY_S:
            ctx.preview(preview_png(denoised), i + 1)
            last_preview[0] = time.monotonic()
        ctx.progress(i + 1, total)

    with torch.no_grad():
        samples = spec.function(denoiser, x, sigmas, callback=progress, **extra)
    return _result(latent, samples)


def _noised(clean: "torch.Tensor", noise: "torch.Tensor", sigma: "torch.Tensor", model_sigmas: DiscreteSigmas) -> "torch.Tensor":
    """ComfyUI's noise_scaling: at the model's highest sigma the noise is scaled to unit variance after the
    UNet's input scaling (sqrt(1 + sigma²)), below it by sigma."""
    highest = float(model_sigmas.sigma_max)
    full = math.isclose(highest, float(sigma), rel_tol=1e-5) or float(sigma) > highest
    scaled = noise * torch.sqrt(1.0 + sigma ** 2.0) if full else noise * sigma
    return scaled + clean


def _result(latent: Latent, samples: "torch.Tensor") -> Latent:
    return Latent(samples=samples, noise_mask=latent.noise_mask, masked_image=latent.masked_image,
                  paste_pixels=latent.paste_pixels, paste_mask=latent.paste_mask, batch_index=latent.batch_index)


def _check_inputs(model: Model, positive: Conditioning, negative: Conditioning, latent: Latent) -> bool:
    """Refuse what cannot be sampled, naming the input; True for an inpainting UNet (mask and masked image read
    beside the latent: nodes/comfy/inpaint.py)."""
    if latent.schedule is not None:
        raise NodeInputError("latent_image", "this latent was noised by graphflow's AddNoise; ComfyUI's samplers add "
                             "their own noise", "a clean latent (EmptyLatentImage, VAEEncode, ...)", "a noised latent")
    inpainting = concat_channels(int(model.in_channels), int(latent.samples.shape[1])) > 0
    width = int(model.unet.config.cross_attention_dim)
    for name, conditioning in (("positive", positive), ("negative", negative)):
        for entry in conditioning.entries:
            if int(entry.embeds.shape[-1]) != width:
                raise NodeInputError(name, "conditioning width does not fit this model (text encoder and UNet from "
                                     "different models?)", width, int(entry.embeds.shape[-1]))
    if latent.noise_mask is not None and tuple(latent.noise_mask.shape[-2:]) != tuple(latent.samples.shape[-2:]):
        raise NodeInputError("latent_image", "the noise mask does not fit the latent", tuple(latent.samples.shape[-2:]),
                             tuple(latent.noise_mask.shape[-2:]))
    return inpainting


STEPS = Field(20, ge=1, le=MAX_STEPS)
CFG = Field(8.0, ge=0.0, le=100.0, description="classifier-free guidance scale (1 = the negative is not run)")


@node(name="comfy.KSampler", outputs={"LATENT": LATENT}, category="comfy/sampling")
def KSampler(
    model: Model = Input(MODEL),
    seed: ComfySeed = Field(0, description="the noise seed (ComfyUI's: initial noise from seed, per-step noise from seed + 1)"),
    steps: int = STEPS,
    cfg: float = CFG,
    sampler_name: SamplerName = "euler",
    scheduler: SchedulerName = "normal",
    positive: Conditioning = Input(CONDITIONING),
    negative: Conditioning = Input(CONDITIONING),
    latent_image: Latent = Input(LATENT),
    denoise: float = Field(1.0, ge=0.0, le=1.0, description="below 1: the last `steps` steps of a schedule of steps/denoise"),
    *,
    ctx: RunContext,
) -> Latent:
    """ComfyUI's KSampler: noise the latent for the seed and denoise it with a k-diffusion sampler."""
    return sample_latent(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, ctx,
                         denoise=denoise)


@node(name="comfy.KSamplerAdvanced", outputs={"LATENT": LATENT}, category="comfy/sampling")
def KSamplerAdvanced(
    model: Model = Input(MODEL),
    add_noise: Literal["enable", "disable"] = "enable",
    noise_seed: ComfySeed = Field(0, description="the noise seed, as KSampler's"),
    steps: int = STEPS,
    cfg: float = CFG,
    sampler_name: SamplerName = "euler",
    scheduler: SchedulerName = "normal",
    positive: Conditioning = Input(CONDITIONING),
    negative: Conditioning = Input(CONDITIONING),
    latent_image: Latent = Input(LATENT),
    start_at_step: int = Field(0, ge=0, le=MAX_STEPS),
    end_at_step: int = Field(10000, ge=0, le=MAX_STEPS),
    return_with_leftover_noise: Literal["disable", "enable"] = "disable",
    *,
    ctx: RunContext,
) -> Latent:
    """ComfyUI's KSamplerAdvanced: run steps start_at_step .. end_at_step of a `steps`-step schedule.

    add_noise "disable" starts from the latent as it is (a latent left noisy by an earlier pass);
    return_with_leftover_noise "enable" stops at end_at_step's noise level instead of finishing to 0."""
    return sample_latent(model, noise_seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, ctx,
                         add_noise=add_noise == "enable", start_step=start_at_step, last_step=end_at_step,
                         force_full_denoise=return_with_leftover_noise != "enable")
