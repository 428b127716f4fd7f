"""Schedules, noise and the denoising loop — diffusers' Stable Diffusion pipelines cut into three nodes.

    Schedule  → which sampler, how many steps, where to start (img2img strength = ``denoise``)
    AddNoise  → the pipeline's ``prepare_latents``: seeded noise, scaled (txt2img) or added at the start step
    Sample    → the pipeline's denoising loop with classifier-free guidance

Run with the same components, seed and settings, Tokenize → CLIPTextEncode → EmptyLatent → Schedule →
AddNoise → Sample → VAEDecode gives the pixels ``StableDiffusionPipeline`` gives, and VAEEncode → ... gives
``StableDiffusionImg2ImgPipeline``'s (tests/nodes/test_parity.py holds both to 1e-5).

diffusers schedulers are stateful (step counters, multistep history), so a Schedule stores the complete
scheduler config, and every node that needs a scheduler builds a fresh one from it.
"""
# No `from __future__ import annotations` here: the node decorator hands annotations to pydantic as they
# are, and an enum alias (a Literal bound to a name) must reach it as an object, not as a string.

import inspect
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from pydantic import Field

from graphflow.errors import NodeInputError
from graphflow.node import Input, node

from .values import CONDITIONING, LATENT, MODEL, SCHEDULE, Conditioning, Latent, Model
from .values import Schedule as ScheduleValue

MAX_SEED = 2**64 - 1


@dataclass(frozen=True)
class Sampler:
    """A sampler name: the diffusers scheduler class and the config overrides that make it that sampler."""

    name: str
    a1111: str  # the name AUTOMATIC1111's web UI shows for the same sampler
    scheduler_class: str
    overrides: dict[str, Any] = field(default_factory=dict)


_KARRAS = {"use_karras_sigmas": True}
_SDE = {"algorithm_type": "sde-dpmsolver++"}

SAMPLERS: dict[str, Sampler] = {
    s.name: s
    for s in (
        Sampler("euler", "Euler", "EulerDiscreteScheduler"),
        Sampler("euler_a", "Euler a", "EulerAncestralDiscreteScheduler"),
        Sampler("heun", "Heun", "HeunDiscreteScheduler"),
        Sampler("dpm2", "DPM2", "KDPM2DiscreteScheduler"),
        Sampler("dpm2_karras", "DPM2 Karras", "KDPM2DiscreteScheduler", _KARRAS),
        Sampler("dpm2_a", "DPM2 a", "KDPM2AncestralDiscreteScheduler"),
        Sampler("dpm2_a_karras", "DPM2 a Karras", "KDPM2AncestralDiscreteScheduler", _KARRAS),
        Sampler("lms", "LMS", "LMSDiscreteScheduler"),
        Sampler("lms_karras", "LMS Karras", "LMSDiscreteScheduler", _KARRAS),
        Sampler("dpmpp_2m", "DPM++ 2M", "DPMSolverMultistepScheduler"),
        Sampler("dpmpp_2m_karras", "DPM++ 2M Karras", "DPMSolverMultistepScheduler", _KARRAS),
        Sampler("dpmpp_2m_sde", "DPM++ 2M SDE", "DPMSolverMultistepScheduler", _SDE),
        Sampler("dpmpp_2m_sde_karras", "DPM++ 2M SDE Karras", "DPMSolverMultistepScheduler", {**_SDE, **_KARRAS}),
        Sampler("ddim", "DDIM", "DDIMScheduler"),
        Sampler("pndm", "PLMS", "PNDMScheduler"),
        Sampler("unipc", "UniPC", "UniPCMultistepScheduler"),
    )
}

# The enum of the Schedule node's `sampler` input, in table order.
SamplerName = Literal[tuple(SAMPLERS)]


def scheduler_class(name: str):
    import diffusers

    return getattr(diffusers, name)


def build_scheduler(model_config: dict[str, Any], sampler: Sampler, prediction_type: str | None = None):
    """A new scheduler for ``sampler`` from a model's scheduler config, the way diffusers users switch samplers.

    Overrides go in as keyword arguments: merged into the config dict they could be dropped, because a
    saved config lists keys it left at their defaults under ``_use_default_values`` and from_config resets them.
    ``prediction_type`` (the MODEL's, which a loader may have overridden) wins over the config's."""
    overrides = dict(sampler.overrides)
    if prediction_type is not None:
        overrides["prediction_type"] = prediction_type
    return scheduler_class(sampler.scheduler_class).from_config(model_config, **overrides)


def fresh_scheduler(schedule: ScheduleValue):
    """A new scheduler in the state a pipeline's is in right before its first step: timesteps set, and the
    start index set where the scheduler supports it (img2img's ``get_timesteps``)."""
    scheduler = scheduler_class(schedule.scheduler_class).from_config(schedule.scheduler_config)
    scheduler.set_timesteps(schedule.steps)
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(schedule.start_index)
    return scheduler


def start_step(steps: int, denoise: float) -> int:
    """How many of ``steps`` to skip for a given denoise (diffusers img2img ``strength``), same rounding."""
    init_timestep = min(int(steps * denoise), steps)
    return max(steps - init_timestep, 0)


@node(outputs={"schedule": SCHEDULE}, category="sampling")
def Schedule(
    model: Model = Input(MODEL),
    sampler: SamplerName = "euler",
    steps: int = Field(20, ge=1, le=1000),
    denoise: float = Field(1.0, ge=0.0, le=1.0, description="share of the steps to run: 1 starts from pure noise, less keeps more of the input latent (img2img strength)"),
) -> ScheduleValue:
    """Choose a sampler and a number of steps; ``denoise`` < 1 starts part-way (img2img, hires fix).

    The timesteps are those the scheduler makes for ``steps``; with denoise < 1 the first
    ``steps - int(steps * denoise)`` are skipped, as diffusers' img2img pipeline does with ``strength``."""
    spec = SAMPLERS[sampler]
    scheduler = build_scheduler(model.scheduler_config, spec, model.prediction_type)
    try:
        scheduler.set_timesteps(steps)
    except ValueError as exc:  # e.g. more steps than the model was trained with
        raise NodeInputError("steps", str(exc), "a step count this scheduler accepts", steps) from None
    # Private keys (_class_name, _use_default_values, ...) are dropped: every value is now explicit.
    config = {k: v for k, v in scheduler.config.items() if not k.startswith("_")}
    return ScheduleValue(
        sampler=sampler,
        steps=steps,
        denoise=denoise,
        scheduler_class=type(scheduler).__name__,
        scheduler_config=config,
        timesteps=scheduler.timesteps.clone(),
        start_index=start_step(steps, denoise) * scheduler.order,
    )


@node(outputs={"latent": LATENT}, category="sampling")
def AddNoise(
    latent: Latent = Input(LATENT),
    schedule: ScheduleValue = Input(SCHEDULE),
    seed: int = Field(0, ge=0, le=MAX_SEED),
) -> Latent:
    """Add seeded noise for a schedule: the starting point of Sample.

    The noise is ``randn_tensor`` from ``torch.Generator("cpu").manual_seed(seed)``, as in the pipelines.
    An all-zero latent (EmptyLatent) with denoise 1 becomes ``noise * init_noise_sigma`` (txt2img's
    ``prepare_latents``). Any other latent — an encoded image, an upscaled one, or zeros with denoise < 1 —
    is noised to the schedule's first remaining timestep with ``scheduler.add_noise``, as in img2img (so a
    non-empty latent at denoise 1 is img2img at strength 1, not txt2img). With no step left (denoise too
    small for the step count) the latent passes unchanged and Sample returns it as it is.

    The result remembers the clean latent, the noise and the generator state after drawing it, so an
    ancestral or SDE sampler continues the same random stream as a pipeline reusing one generator."""
    if latent.schedule is not None:
        raise NodeInputError("latent", "this latent is already noised; connect the clean latent", "a latent without noise (EmptyLatent, VAEEncode, LatentUpscale, Sample)", f"a latent noised for {latent.schedule.sampler}")
    from diffusers.utils.torch_utils import randn_tensor

    scheduler = fresh_scheduler(schedule)
    clean = latent.samples
    generator = torch.Generator("cpu").manual_seed(seed)
    noise = randn_tensor(tuple(clean.shape), generator=generator, device=clean.device, dtype=clean.dtype)
    timesteps = scheduler.timesteps[schedule.start_index:]
    if schedule.start_index == 0 and not torch.any(clean):
        noisy = noise * scheduler.init_noise_sigma
    elif len(timesteps) == 0:
        noisy = clean
    else:
        noisy = scheduler.add_noise(clean, noise, timesteps[:1].repeat(clean.shape[0]))
    return Latent(
        samples=noisy,
        noise_mask=latent.noise_mask,
        masked_image=latent.masked_image,
        schedule=schedule,
        clean=clean,
        noise=noise,
        rng_state=generator.get_state(),
    )


@node(outputs={"latent": LATENT}, category="sampling")
def Sample(
    model: Model = Input(MODEL),
    positive: Conditioning = Input(CONDITIONING),
    negative: Conditioning | None = Input(CONDITIONING, optional=True, description="needed when cfg > 1"),
    latent: Latent = Input(LATENT, description="a noised latent from AddNoise"),
    cfg: float = Field(7.5, ge=0.0, le=100.0, description="classifier-free guidance scale; ≤ 1 = no guidance, negative unused"),
    eta: float = Field(0.0, ge=0.0, le=1.0, description="DDIM's η (other samplers ignore it)"),
    seed: int = Field(-1, ge=-1, le=MAX_SEED, description="-1 = continue AddNoise's random stream; ≥ 0 = a new generator"),
    ctx=None,
) -> Latent:
    """Denoise a noised latent with the UNet and classifier-free guidance; returns the clean result.

    The loop is diffusers' StableDiffusionPipeline's: for each remaining timestep, batch [negative, positive],
    scale the input, predict noise, guide (``uncond + cfg * (cond - uncond)``, only when cfg > 1), step the
    scheduler. Conditioning of batch 1 serves every latent in the batch."""
    schedule = _noised_schedule(latent)
    _reject_inpainting(model, latent)
    guidance = cfg > 1
    batch = latent.batch_size
    embeds = _conditioning_for_batch(model, positive, batch, "positive")
    if guidance:
        if not isinstance(negative, Conditioning):
            raise NodeInputError("negative", f"cfg {cfg} > 1 needs a negative conditioning (encode \"\" for none)", "a CONDITIONING link", "nothing connected")
        uncond = _conditioning_for_batch(model, negative, batch, "negative")
        if uncond.shape != embeds.shape:
            raise NodeInputError("negative", "negative and positive conditioning differ in shape", tuple(embeds.shape), tuple(uncond.shape))
        embeds = torch.cat([uncond, embeds])

    scheduler = fresh_scheduler(schedule)
    generator = _generator(seed, latent)
    extra_step_kwargs = _extra_step_kwargs(scheduler, generator, eta)
    timesteps = scheduler.timesteps[schedule.start_index:]
    latents = latent.samples.to(device=model.device, dtype=model.dtype)
    with torch.no_grad():
        for i, t in enumerate(timesteps):
            model_input = torch.cat([latents] * 2) if guidance else latents
            model_input = scheduler.scale_model_input(model_input, t)
            # HOOK(inpainting): a 9-channel UNet gets [model_input, noise_mask, masked_image] concatenated here.
            noise_pred = model.unet(model_input, t, encoder_hidden_states=embeds, return_dict=False)[0]
            if guidance:
                noise_uncond, noise_cond = noise_pred.chunk(2)
                noise_pred = noise_uncond + cfg * (noise_cond - noise_uncond)
            latents = scheduler.step(noise_pred, t, latents, **extra_step_kwargs, return_dict=False)[0]
            # HOOK(inpainting): outside noise_mask, put back latent.clean re-noised to the next timestep.
            # HOOK(previews): ctx.preview(<fast decode of latents>, i + 1).
            if ctx is not None:
                ctx.progress(i + 1, len(timesteps))
    return Latent(samples=latents)


def _noised_schedule(latent: Latent) -> ScheduleValue:
    if latent.schedule is None or latent.rng_state is None:
        raise NodeInputError("latent", "Sample needs a noised latent; pass this latent through AddNoise first", "a latent from AddNoise", "a clean latent")
    return latent.schedule


def _reject_inpainting(model: Model, latent: Latent) -> None:
    # Until inpainting lands (see the HOOK lines in Sample), refuse its inputs rather than ignore them.
    if latent.noise_mask is not None or latent.masked_image is not None:
        raise NodeInputError("latent", "inpainting (a latent with a noise mask) is not supported yet", "a latent without noise_mask", "a masked latent")
    channels = int(latent.samples.shape[1])
    if model.in_channels != channels:
        raise NodeInputError("model", f"the UNet takes {model.in_channels} input channels, the latent has {channels}", f"a {channels}-channel UNet", f"{model.in_channels} channels")


def _conditioning_for_batch(model: Model, conditioning: Conditioning, batch: int, name: str) -> torch.Tensor:
    """Embeddings for ``batch`` latents: each prompt repeated batch/prompts times, as num_images_per_prompt does."""
    embeds = conditioning.embeds.to(device=model.device, dtype=model.dtype)
    prompts, seq_len, width = embeds.shape
    expected_width = int(model.unet.config.cross_attention_dim)
    if width != expected_width:
        raise NodeInputError(name, "conditioning width does not fit this model (text encoder and UNet from different models?)", expected_width, width)
    if batch % prompts:
        raise NodeInputError(name, f"{prompts} prompts cannot be spread over a latent batch of {batch}", f"a divisor of {batch}", prompts)
    per_prompt = batch // prompts
    return embeds.repeat(1, per_prompt, 1).view(prompts * per_prompt, seq_len, width)


def _generator(seed: int, latent: Latent) -> torch.Generator:
    generator = torch.Generator("cpu")
    if seed >= 0:
        return generator.manual_seed(seed)
    generator.set_state(latent.rng_state)
    return generator


def _extra_step_kwargs(scheduler, generator: torch.Generator, eta: float) -> dict[str, Any]:
    """eta and generator for the schedulers whose ``step`` accepts them (the pipeline's prepare_extra_step_kwargs)."""
    accepted = inspect.signature(scheduler.step).parameters
    kwargs: dict[str, Any] = {}
    if "eta" in accepted:
        kwargs["eta"] = eta
    if "generator" in accepted:
        kwargs["generator"] = generator
    return kwargs
