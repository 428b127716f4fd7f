"""Schedules, noise and the denoising loop — diffusers' Stable Diffusion pipelines cut into three nodes.

    Schedule  → which sampler, how many steps, where to start (img2img strength = ``denoise``)
    AddNoise  → the pipeline's ``prepare_latents``: seeded noise, scaled (txt2img) or added at the start step
    Sample    → the pipeline's denoising loop with classifier-free guidance

Run with the same components, seed and settings, Tokenize → CLIPTextEncode → EmptyLatent → Schedule →
AddNoise → Sample → VAEDecode gives the pixels ``StableDiffusionPipeline`` gives, and VAEEncode → ... gives
``StableDiffusionImg2ImgPipeline``'s (tests/nodes/test_parity.py holds both to 1e-5). A latent with a noise
mask (InpaintEncode, SetLatentNoiseMask) is inpainted as ``StableDiffusionInpaintPipeline`` does, for
4-channel and 9-channel UNets alike (tests/nodes/test_inpaint.py).

diffusers schedulers are stateful (step counters, multistep history), so a Schedule stores the complete
scheduler config, and every node that needs a scheduler builds a fresh one from it.
"""

import inspect
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from pydantic import Field

from graphflow.context import RunContext
from graphflow.errors import NodeInputError
from graphflow.node import Input, node
from graphflow.seeds import Seed, seed_type

from .controlnet import ControlResiduals, control_residuals
from .preview import PreviewMode, StepPreviews
from .t2i_adapter import with_adapters
from .unet_inputs import UNetInputs, unet_inputs
from .values import (CONDITIONING, IMAGE, LATENT, MODEL, SCHEDULE, VAE, Conditioning, Image, Latent, Model,
                     ScheduleValue, Vae)

BatchSeeds = Literal["one_stream", "seed_plus_index"]
# Sample's -1 already means "continue AddNoise's stream", so only "random" draws a seed there.
SampleSeed = seed_type(minimum=-1, random=("random",))


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


def cutoff_timestep(scheduler, fraction: float) -> int:
    """The training timestep at ``fraction`` of the way from pure noise to clean (the SDXL pipelines' rounding)."""
    total = scheduler.config.num_train_timesteps
    return int(round(total - fraction * total))


def resume_index(scheduler, denoising_start: float) -> int:
    """Where a schedule starting at ``denoising_start`` begins (StableDiffusionXLImg2ImgPipeline.get_timesteps): the
    timesteps below the cut-off, one more for a second-order scheduler so a step's two halves stay together."""
    remaining = int((scheduler.timesteps < cutoff_timestep(scheduler, denoising_start)).sum())
    if scheduler.order == 2 and remaining % 2 == 0:
        remaining += 1
    return len(scheduler.timesteps) - remaining


@node(outputs={"schedule": SCHEDULE}, category="sampling", version=2)
def Schedule(
    model: Model = Input(MODEL),
    sampler: SamplerName = "euler",
    steps: int = Field(20, ge=1, le=1000),
    denoise: float = Field(1.0, ge=0.0, le=1.0, description="share of the steps to run: 1 starts from pure noise, less keeps more of the input latent (img2img strength)"),
    denoising_start: float = Field(0.0, ge=0.0, lt=1.0, description="resume a schedule another Sample stopped at this share of the noise schedule (its denoising_end; diffusers' denoising_start): the latent gets no new noise; 0 = off"),
    denoising_end: float = Field(1.0, gt=0.0, le=1.0, description="stop at this share of the noise schedule, leaving a noisy latent for a model that resumes there (SDXL base → refiner; diffusers' denoising_end); 1 = run to the end"),
) -> ScheduleValue:
    """Choose a sampler and a number of steps; ``denoise`` < 1 starts part-way (img2img, hires fix).

    The timesteps are those the scheduler makes for ``steps``; with denoise < 1 the first
    ``steps - int(steps * denoise)`` are skipped, as diffusers' img2img pipeline does with ``strength``.

    Base → refiner hand-off: a schedule with ``denoising_end`` 0.8 stops where 80 % of the noise is gone (the
    timesteps at or above training step 200 of 1000); one with ``denoising_start`` 0.8 over the same steps runs
    the rest on the stopped latent, as diffusers' ``denoising_end`` / ``denoising_start`` do."""
    spec = SAMPLERS[sampler]
    scheduler = build_scheduler(model.scheduler_config, spec, model.prediction_type)
    try:
        scheduler.set_timesteps(steps)
    except ValueError as exc:  # e.g. more steps than the model was trained with
        raise NodeInputError("steps", str(exc), "a step count this scheduler accepts", steps) from None
    if denoising_start > 0 and denoise < 1:
        raise NodeInputError("denoise", "denoising_start sets where a resumed schedule starts; denoise cannot also "
                             "set it", "denoise 1 with denoising_start > 0", denoise)
    if denoising_start >= denoising_end:
        raise NodeInputError("denoising_end", "a schedule must end after it starts", f"> {denoising_start}", denoising_end)
    if denoising_start > 0:
        start = resume_index(scheduler, denoising_start)
    else:
        start = start_step(steps, denoise) * scheduler.order
    end = None
    if denoising_end < 1:
        cutoff = cutoff_timestep(scheduler, denoising_end)
        end = start + int((scheduler.timesteps[start:] >= cutoff).sum())
    # Private keys (_class_name, _use_default_values, ...) are dropped: every value is now explicit.
    config = {k: v for k, v in scheduler.config.items() if not k.startswith("_")}
    return ScheduleValue(
        sampler=sampler,
        steps=steps,
        denoise=denoise,
        scheduler_class=type(scheduler).__name__,
        scheduler_config=config,
        timesteps=scheduler.timesteps.clone(),
        start_index=start,
        end_index=end,
        resumes=denoising_start > 0,
    )


@node(outputs={"latent": LATENT}, category="sampling", version=3)
def AddNoise(
    latent: Latent = Input(LATENT),
    schedule: ScheduleValue = Input(SCHEDULE),
    seed: Seed = Field(0, description="the noise seed; -1 or \"random\" = a new random seed for every run"),
    batch_seeds: BatchSeeds = Field("one_stream", description="one_stream: one random stream for the whole batch (diffusers, ComfyUI); seed_plus_index: image i gets seed + i, as in AUTOMATIC1111's batches, so any image of a batch can be redone alone"),
) -> Latent:
    """Add seeded noise for a schedule: the starting point of Sample.

    The noise is ``randn_tensor`` from ``torch.Generator("cpu").manual_seed(seed)``, as in the pipelines.
    An all-zero latent (EmptyLatent) with denoise 1 becomes ``noise * init_noise_sigma`` (txt2img's
    ``prepare_latents``), and so does a latent with a noise mask at denoise 1 (the inpainting pipeline at
    strength 1: outside the mask Sample puts the image back anyway). Any other latent — an encoded image,
    an upscaled one, or zeros with denoise < 1 — is noised to the schedule's first remaining timestep with
    ``scheduler.add_noise``, as in img2img (so a non-empty latent at denoise 1 is img2img at strength 1, not
    txt2img). With no step left (denoise too small for the step count) the latent passes unchanged and
    Sample returns it as it is.

    The result remembers the clean latent, the noise and the generator state after drawing it, so an
    ancestral or SDE sampler continues the same random stream as a pipeline reusing one generator. With
    ``seed_plus_index`` each image has its own generator (and state), so image i of a batch is exactly the
    image that seed + i gives at batch size 1, whatever the sampler."""
    if latent.schedule is not None:
        raise NodeInputError("latent", "this latent is already noised; connect the clean latent", "a latent without noise (EmptyLatent, VAEEncode, LatentUpscale, Sample)", f"a latent noised for {latent.schedule.sampler}")
    from diffusers.utils.torch_utils import randn_tensor

    scheduler = fresh_scheduler(schedule)
    clean = latent.samples
    if schedule.resumes:
        return _resumed(latent, schedule, seed, batch_seeds)
    if batch_seeds == "seed_plus_index":
        generators = [torch.Generator("cpu").manual_seed((seed + i) % 2**64) for i in range(clean.shape[0])]
        noise = randn_tensor(tuple(clean.shape), generator=generators, device=clean.device, dtype=clean.dtype)
        rng_state = torch.stack([g.get_state() for g in generators])  # (B, state): one stream per image
    else:
        generator = torch.Generator("cpu").manual_seed(seed)
        noise = randn_tensor(tuple(clean.shape), generator=generator, device=clean.device, dtype=clean.dtype)
        rng_state = generator.get_state()
    timesteps = scheduler.timesteps[schedule.start_index:]
    if schedule.start_index == 0 and (latent.noise_mask is not None or not torch.any(clean)):
        noisy = noise * scheduler.init_noise_sigma
    elif len(timesteps) == 0:
        noisy = clean
    else:
        noisy = scheduler.add_noise(clean, noise, timesteps[:1].repeat(clean.shape[0]))
    return Latent(
        samples=noisy,
        noise_mask=latent.noise_mask,
        masked_image=latent.masked_image,
        paste_pixels=latent.paste_pixels,
        paste_mask=latent.paste_mask,
        schedule=schedule,
        clean=clean,
        noise=noise,
        rng_state=rng_state,
    )


def _resumed(latent: Latent, schedule: ScheduleValue, seed: int, batch_seeds: BatchSeeds) -> Latent:
    """A latent for a schedule that resumes at ``denoising_start``: it is already noised to that step, so it passes
    as it is and no noise is drawn — the generator's stream starts fresh for the sampler, as in the refiner pipeline."""
    if latent.noise_mask is not None:
        raise NodeInputError("schedule", "a schedule resumed at denoising_start cannot inpaint a masked latent",
                             "a schedule without denoising_start", "denoising_start > 0")
    samples = latent.samples
    if batch_seeds == "seed_plus_index":
        rng_state = torch.stack([torch.Generator("cpu").manual_seed((seed + i) % 2**64).get_state()
                                 for i in range(samples.shape[0])])
    else:
        rng_state = torch.Generator("cpu").manual_seed(seed).get_state()
    return Latent(samples=samples, paste_pixels=latent.paste_pixels, paste_mask=latent.paste_mask, schedule=schedule,
                  clean=samples, noise=torch.zeros_like(samples), rng_state=rng_state)


@node(outputs={"latent": LATENT, "previews": IMAGE}, category="sampling", version=3)
def Sample(
    model: Model = Input(MODEL),
    positive: Conditioning = Input(CONDITIONING),
    negative: Conditioning | None = Input(CONDITIONING, optional=True, description="needed when cfg > 1"),
    latent: Latent = Input(LATENT, description="a noised latent from AddNoise"),
    cfg: float = Field(7.5, ge=0.0, le=100.0, description="classifier-free guidance scale; ≤ 1 = no guidance, negative unused"),
    eta: float = Field(0.0, ge=0.0, le=1.0, description="DDIM's η (other samplers ignore it)"),
    seed: SampleSeed = Field(-1, description="-1 = continue AddNoise's random stream; ≥ 0 = a new generator; "
                             "\"random\" = a new generator with a random seed for every run"),
    preview_every: int = Field(0, ge=0, le=1000, description="show (and keep as a `previews` frame) the work in progress every N steps; 0 = off"),
    preview_mode: PreviewMode = Field("latent_rgb", description="latent_rgb: fast approximate colours; vae: decode with the connected VAE (slower, exact)"),
    vae: Vae | None = Input(VAE, optional=True, description="decodes the previews when preview_mode is vae; sizes latent_rgb frames"),
    *,
    ctx: RunContext,
) -> tuple[Latent, Image]:
    """Denoise a noised latent with the UNet and classifier-free guidance; returns the clean result.

    The loop is diffusers' StableDiffusionPipeline's: for each remaining timestep, batch [negative, positive],
    scale the input, predict noise, guide (``uncond + cfg * (cond - uncond)``, only when cfg > 1), step the
    scheduler. Conditioning of batch 1 serves every latent in the batch; a positive and a negative of
    different lengths (prompts over 75 tokens) are evened out with empty-prompt chunks. An SDXL UNet also gets
    the pooled embeddings and size ids (nodes/sdxl.py), as StableDiffusionXLPipeline feeds them; for SDXL base an
    empty negative prompt is zeros (the pipeline's ``force_zeros_for_empty_prompt``).

    A latent with a noise mask is inpainted as StableDiffusionInpaintPipeline does: a 4-channel UNet's
    result is put back to the original (re-noised to the next step's level) outside the mask after every
    step; a 9-channel inpainting UNet gets the mask and the masked-image latents beside its input instead.

    ControlNets that ApplyControlNet attached to the conditionings add their residuals to every UNet call
    whose step they cover, as StableDiffusionControlNetPipeline does (nodes/controlnet.py); T2I-Adapters that
    ApplyT2IAdapter attached add their features to the UNet's down blocks, as StableDiffusionAdapterPipeline does
    (nodes/t2i_adapter.py).

    ``previews`` holds the frames shown every ``preview_every`` steps, the last step included (feed it to
    SaveAnimation for a denoising animation); with previews off it holds one frame, the result's latent_rgb
    picture, so the output is always a valid image."""
    schedule = _noised_schedule(latent)
    inpaint = _inpainting(model, latent)
    inputs = unet_inputs(model, positive, negative, cfg, latent.batch_size, tuple(latent.samples.shape[-2:]))
    guidance = cfg > 1
    inputs = with_adapters(inputs, model, positive, negative, guidance, latent)
    control = control_residuals(model, positive, negative, guidance, latent)
    previews = StepPreviews(preview_every, preview_mode, vae, ctx)

    scheduler = fresh_scheduler(schedule)
    generator = _generator(seed, latent)
    extra_step_kwargs = _extra_step_kwargs(scheduler, generator, eta)
    timesteps = scheduler.timesteps[schedule.start_index:schedule.end_index]
    latents = latent.samples.to(device=model.device, dtype=model.dtype)
    with torch.no_grad():
        for i, t in enumerate(timesteps):
            model_input = torch.cat([latents] * 2) if guidance else latents
            model_input = scheduler.scale_model_input(model_input, t)
            noise_pred = _predict_noise(model, model_input, t, inputs, inpaint, control, i, len(timesteps))
            if guidance:
                noise_uncond, noise_cond = noise_pred.chunk(2)
                noise_pred = noise_uncond + cfg * (noise_cond - noise_uncond)
            step = scheduler.step(noise_pred, t, latents, **extra_step_kwargs)
            latents = step.prev_sample
            if inpaint is not None and not inpaint.concatenated:
                latents = inpaint.keep_unmasked(scheduler, latents, next_timestep=timesteps[i + 1:i + 2])
            if previews.due(i + 1, len(timesteps)):
                previews.add(_finished_guess(step, latents), i + 1)
            ctx.progress(i + 1, len(timesteps))
    return Latent(samples=latents, paste_pixels=latent.paste_pixels, paste_mask=latent.paste_mask), previews.frames(latents)


def _predict_noise(model: Model, model_input: "torch.Tensor", t, inputs: UNetInputs, inpaint: "Inpainting | None",
                   control: ControlResiduals | None, step: int, steps: int) -> "torch.Tensor":
    """The UNet's prediction for one step. ControlNets see the latents alone (before an inpainting UNet's mask and
    masked-image channels, as in diffusers' ControlNet inpainting pipeline); their residuals join the UNet call."""
    embeds = inputs.encoder_hidden_states
    extra = control.unet_kwargs(model_input, t, embeds, step, steps, inputs.added_cond_kwargs) if control is not None else {}
    if inpaint is not None and inpaint.concatenated:
        model_input = torch.cat([model_input, *inpaint.unet_extras(model_input.shape[0])], dim=1)
    return inputs.predict(model.unet, model_input, t, step, steps, **extra)


@dataclass(frozen=True)
class Inpainting:
    """A masked latent's extra inputs, on the model's device and dtype, as Sample's loop uses them.

    ``concatenated``: a 9-channel UNet that takes mask and masked image as input; otherwise the result is
    blended back to ``clean`` outside the mask after every step."""

    mask: "torch.Tensor"  # (1 or B, 1, h, w), 1 = repaint
    clean: "torch.Tensor"  # the latent before AddNoise
    noise: "torch.Tensor"  # the noise AddNoise drew, reused to re-noise `clean` at each step
    masked_image: "torch.Tensor | None"
    concatenated: bool

    def unet_extras(self, batch: int) -> "tuple[torch.Tensor, torch.Tensor]":
        """[mask, masked-image latents] for a UNet input batch (CFG doubles it), the pipeline's concat order."""
        per_image = self.clean.shape[0]
        repeat = batch // per_image
        mask = self.mask.expand(per_image, -1, -1, -1).repeat(repeat, 1, 1, 1)
        masked_image = self.masked_image.expand(per_image, -1, -1, -1).repeat(repeat, 1, 1, 1)
        return mask, masked_image

    def keep_unmasked(self, scheduler, latents: "torch.Tensor", next_timestep: "torch.Tensor") -> "torch.Tensor":
        """Outside the mask, the clean latent noised to the level the next step expects (clean after the last)."""
        kept = self.clean if len(next_timestep) == 0 else scheduler.add_noise(self.clean, self.noise, next_timestep)
        return (1 - self.mask) * kept + self.mask * latents


def _finished_guess(step, latents: "torch.Tensor") -> "torch.Tensor":
    """What a preview shows: the scheduler's prediction of the finished latent where its step returns one
    (Euler, DDIM, LMS, ...), else the current noisy latent (DPM++ multistep, UniPC, PNDM)."""
    predicted = getattr(step, "pred_original_sample", None)
    return latents if predicted is None else predicted


def _noised_schedule(latent: Latent) -> ScheduleValue:
    if latent.schedule is None or latent.rng_state is None:
        raise NodeInputError("latent", "Sample needs a noised latent; pass this latent through AddNoise first", "a latent from AddNoise", "a clean latent")
    return latent.schedule


def _inpainting(model: Model, latent: Latent) -> Inpainting | None:
    """The latent's inpainting inputs checked against the UNet, or None for plain sampling."""
    channels = int(latent.samples.shape[1])
    batch, size = latent.batch_size, tuple(latent.samples.shape[-2:])
    if latent.noise_mask is not None:
        mask = latent.noise_mask
        if tuple(mask.shape[-2:]) != size or mask.shape[0] not in (1, batch):
            raise NodeInputError("latent", "the noise mask does not fit the latent", f"(1 or {batch}, 1, {size[0]}, {size[1]})", tuple(mask.shape))
    if model.in_channels == channels:
        if latent.noise_mask is None:
            return None
        return Inpainting(_on(model, latent.noise_mask), _on(model, latent.clean), _on(model, latent.noise), None, concatenated=False)
    masked = latent.masked_image
    extra = 1 + (int(masked.shape[1]) if masked is not None else channels)
    if model.in_channels != channels + extra:
        raise NodeInputError("model", f"the UNet takes {model.in_channels} input channels, the latent has {channels}", f"a {channels}-channel UNet, or a {channels + extra}-channel inpainting UNet", f"{model.in_channels} channels")
    if latent.noise_mask is None or masked is None:
        raise NodeInputError("latent", f"this {model.in_channels}-channel inpainting UNet needs a mask and the masked image's latents", "a latent from InpaintEncode", "a latent without them")
    if tuple(masked.shape[-2:]) != size or masked.shape[0] not in (1, batch):
        raise NodeInputError("latent", "the masked-image latents do not fit the latent", f"(1 or {batch}, {masked.shape[1]}, {size[0]}, {size[1]})", tuple(masked.shape))
    return Inpainting(_on(model, latent.noise_mask), _on(model, latent.clean), _on(model, latent.noise), _on(model, masked), concatenated=True)


def _on(model: Model, tensor: "torch.Tensor") -> "torch.Tensor":
    return tensor.to(device=model.device, dtype=model.dtype)


def _generator(seed: int, latent: Latent) -> "torch.Generator | list[torch.Generator]":
    """A new generator for seed ≥ 0; else AddNoise's stream continued: one generator, or one per image
    (a list, which diffusers' schedulers draw from image by image)."""
    if seed >= 0:
        return torch.Generator("cpu").manual_seed(seed)
    def continued(state):  # clone: torch's set_state crashes on a row view of the (B, state) stack
        return torch.Generator("cpu").set_state(state.clone())

    states = latent.rng_state
    return [continued(state) for state in states] if states.dim() == 2 else continued(states)


def _extra_step_kwargs(scheduler, generator, eta: float) -> dict[str, Any]:
    """eta and generator for the schedulers whose ``step`` accepts them (the pipeline's prepare_extra_step_kwargs)."""
    accepted = inspect.signature(scheduler.step).parameters
    kwargs: dict[str, Any] = {}
    if "eta" in accepted:
        kwargs["eta"] = eta
    if "generator" in accepted:
        kwargs["generator"] = generator
    return kwargs
