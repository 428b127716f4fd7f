"""What the UNet takes besides the noisy latents and the timestep, gathered in one place for Sample's loop.

:func:`unet_inputs` builds, once per Sample, the text features for classifier-free guidance ([negative,
positive] stacked), and for SDXL the added conditioning (pooled embedding and size ids). Inputs that change from
step to step (ControlNet residuals) are ``step_inputs``: callables that get the step's UNet input and the keyword
arguments built so far and return more keyword arguments. :meth:`UNetInputs.predict` is the only UNet call, so
every kind of extra input passes through it and the sampling loop never forks."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from graphflow.errors import NodeInputError, node_inputs

from .prompt import pad_conditionings
from .sdxl import time_id_count, time_ids, wants_added_conditioning
from .values import Conditioning, Model

# (model input, timestep, step index, step count, keyword arguments so far) → more keyword arguments
StepInput = Callable[["torch.Tensor", "torch.Tensor", int, int, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class UNetInputs:
    encoder_hidden_states: "torch.Tensor"
    added_cond_kwargs: "dict[str, torch.Tensor] | None" = None
    step_inputs: tuple[StepInput, ...] = ()

    def predict(self, unet, sample: "torch.Tensor", t: "torch.Tensor", step: int, steps: int, **extra) -> "torch.Tensor":
        kwargs: dict[str, Any] = {"encoder_hidden_states": self.encoder_hidden_states, **extra}
        if self.added_cond_kwargs is not None:
            kwargs["added_cond_kwargs"] = self.added_cond_kwargs
        for step_input in self.step_inputs:
            kwargs.update(step_input(sample, t, step, steps, kwargs))
        return unet(sample, t, **kwargs, return_dict=False)[0]


def unet_inputs(model: Model, positive: Conditioning, negative: Conditioning | None, cfg: float, batch: int,
                latent_size: tuple[int, int]) -> UNetInputs:
    """The UNet's inputs for ``batch`` latents of ``latent_size`` (h, w): [negative, positive] for CFG (cfg > 1),
    else positive alone; an empty negative prompt becomes zeros where the pipeline says so (SDXL base)."""
    _check_width(model, positive, "positive")
    sides, zeroed = [("positive", positive, positive.embeds)], False
    if cfg > 1:
        if not isinstance(negative, Conditioning):
            raise NodeInputError("negative", f"cfg {cfg} > 1 needs a negative conditioning (encode \"\" for none)", "a CONDITIONING link", "nothing connected")
        _check_width(model, negative, "negative")
        with node_inputs():  # pad_conditionings names positive or negative, as Sample's inputs are named
            cond, uncond = pad_conditionings(positive, negative)
        zeroed = model.zero_empty_negative and all(text == "" for text in negative.text) and bool(negative.text)
        sides = [("negative", negative, torch.zeros_like(uncond) if zeroed else uncond), ("positive", positive, cond)]
    embeds = torch.cat([_for_batch(model, e, batch, name) for name, _, e in sides])
    if not wants_added_conditioning(model):
        return UNetInputs(embeds)
    image_size = (latent_size[0] * model.vae_scale_factor, latent_size[1] * model.vae_scale_factor)
    pooled, ids = [], []
    for name, conditioning, _ in sides:
        if conditioning.pooled is None:
            raise NodeInputError(name, "this SDXL UNet needs a pooled prompt embedding; encode with an SDXL CLIP",
                                 "a conditioning from an SDXL CLIP", "a conditioning without one")
        count = time_id_count(model, int(conditioning.pooled.shape[-1]))
        side_pooled = conditioning.pooled
        if zeroed and name == "negative":
            side_pooled = torch.zeros_like(side_pooled)
        pooled.append(_for_batch(model, side_pooled[:, None, :], batch, name)[:, 0])
        row = time_ids(conditioning.sizes, positive.sizes if name == "negative" else {}, image_size, count, name == "negative")
        ids.append(torch.tensor([row], device=model.device, dtype=model.dtype).repeat(batch, 1))
    return UNetInputs(embeds, {"text_embeds": torch.cat(pooled), "time_ids": torch.cat(ids)})


def _check_width(model: Model, conditioning: Conditioning, name: str) -> None:
    if not conditioning.is_plain:
        raise NodeInputError(name, "this conditioning has several entries or an area (ComfyUI's ConditioningCombine / "
                             "ConditioningSetArea); Sample takes one prompt over the whole latent",
                             "a conditioning from CLIPTextEncode / TextEncode, or comfy.KSampler to compose areas",
                             f"{len(conditioning.entries)} entries, area {conditioning.area}")
    width, expected = int(conditioning.embeds.shape[-1]), int(model.unet.config.cross_attention_dim)
    if width != expected:
        raise NodeInputError(name, "conditioning width does not fit this model (text encoder and UNet from different models?)", expected, width)


def _for_batch(model: Model, embeds: "torch.Tensor", batch: int, name: str) -> "torch.Tensor":
    """Embeddings for ``batch`` latents: each prompt repeated batch/prompts times, as num_images_per_prompt does."""
    embeds = embeds.to(device=model.device, dtype=model.dtype)
    prompts, seq_len, width = embeds.shape
    if batch % prompts:
        raise NodeInputError(name, f"{prompts} prompts cannot be spread over a latent batch of {batch}", f"a divisor of {batch}", prompts)
    per_prompt = batch // prompts
    return embeds.repeat(1, per_prompt, 1).view(prompts * per_prompt, seq_len, width)
