"""ControlNet: LoadControlNet (CONTROL_NET), ApplyControlNet (CONDITIONING), and the residuals Sample feeds the UNet.

Models (README section)
-----------------------
ControlNets go in ``models/controlnet/``: a diffusers ControlNetModel folder (``config.json`` + weights), or a single
file ``<name>``, ``<name>.safetensors``, ``.pth``, ``.ckpt`` or ``.pt`` in the original layout (lllyasviel's
``control_*`` / ``control_v11*`` releases: keys under ``control_model.``, or bare), or with diffusers' keys (most
SDXL ControlNets). SD 1.x, SD 2.x and SDXL ControlNets load offline from the configs shipped in
``nodes/models/configs/controlnet-*``, every size read from the weights; a tensor the architecture does not have, or
one it needs that the file lacks, is an error. ``tiny-sd-controlnet`` and ``tiny-sdxl-controlnet`` are built in:
random ControlNets for ``tiny-sd`` and ``tiny-sdxl`` (for tests; their effect is noise on noise), and so is
``toy-shapes-canny``, a Canny ControlNet trained for ``toy-shapes`` (shipped in the package, when present).

How it samples (diffusers' StableDiffusionControlNetPipeline, step by step): at each step every ControlNet whose
range covers the step (``start_percent ≤ i/N`` and ``(i+1)/N ≤ end_percent`` for step i of the N that Sample runs)
sees the scaled latents, the timestep, the text embeddings and its control image, and returns one residual per
UNet input block and one for the middle block, times ``strength``; the residuals of all ControlNets are added up
and the UNet adds them to its skip connections. A ControlNet on both positive and negative runs once on the whole
CFG batch; one on the positive only (guess mode, or wired so) runs on the positive half, the negative half getting
zero residuals. An SDXL ControlNet also embeds the SDXL UNet's added conditioning (pooled text, size ids): it gets
the rows of it that the UNet gets (``unet_inputs`` builds them once), as StableDiffusionXLControlNetPipeline does.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import torch
from pydantic import Field

from graphflow.context import RunContext
from graphflow.errors import NodeInputError
from graphflow.node import Input, node

from .builtin_models import PACKAGE_MODELS, TINY_CONTROLNET_NAME, tiny_controlnet_folder
from .builtin_sdxl import TINY_SDXL_CONTROLNET_NAME, tiny_sdxl_controlnet_folder
from .checkpoints.controlnet import load_controlnet_file, load_controlnet_folder
from .loaders import Device, Dtype, load_or_name_error, model_fingerprint, model_preflight, pick_device, pick_dtype, resolve
from .model_folders import kind_folders
from .values import (CONDITIONING, CONTROL_NET, IMAGE, Conditioning, Control, ControlNet, Image, Latent, Model)

CONTROLNET_SUFFIXES = (".safetensors", ".pth", ".ckpt", ".pt")
TOY_CANNY = PACKAGE_MODELS / "toy-shapes-canny"


def controlnet_dirs(models_dir: Path) -> list[Path]:
    return kind_folders(models_dir, "controlnet")  # models/controlnet, A1111's ControlNet/, extra_model_paths.yaml


def is_controlnet_folder(path: Path) -> bool:
    return (path / "config.json").is_file()


def builtin_controlnets() -> dict:
    """Built-in names → a function giving their folder: the tiny random ones (tiny-sd's, tiny-sdxl's), and
    toy-shapes' trained one when shipped."""
    builtins = {TINY_CONTROLNET_NAME: tiny_controlnet_folder, TINY_SDXL_CONTROLNET_NAME: tiny_sdxl_controlnet_folder}
    if (TOY_CANNY / "config.json").is_file():
        builtins["toy-shapes-canny"] = lambda: TOY_CANNY
    return builtins


_SEARCH = (controlnet_dirs, CONTROLNET_SUFFIXES, is_controlnet_folder, builtin_controlnets)


@node(outputs={"control_net": CONTROL_NET}, category="loaders", pool="model",
      fingerprint=model_fingerprint(*_SEARCH), preflight=model_preflight(*_SEARCH))
def LoadControlNet(
    name: Annotated[str, Field(description="built-in name, or a diffusers folder / file in models/controlnet/")] = TINY_CONTROLNET_NAME,
    dtype: Dtype = "auto",
    device: Device = "auto",
    *,
    ctx: RunContext,
) -> ControlNet:
    """Load an SD 1.x / 2.x / SDXL ControlNet: a diffusers folder, or a single file (original layout, or diffusers' keys)."""
    folders_of, suffixes, is_folder, builtins = _SEARCH
    target = pick_device(device)
    path = resolve(name, folders_of(ctx.settings.models_dir), suffixes, is_folder, builtins)
    torch_dtype = pick_dtype(dtype, target)
    read = load_controlnet_folder if path.is_dir() else load_controlnet_file
    module, family = load_or_name_error(name, path, lambda: read(path, torch_dtype), "an SD 1.x, SD 2.x or SDXL ControlNet")
    return ControlNet(module=module.to(target), family=family, name=name)


@node(outputs={"positive": CONDITIONING, "negative": CONDITIONING}, category="conditioning")
def ApplyControlNet(
    positive: Conditioning = Input(CONDITIONING),
    negative: Conditioning = Input(CONDITIONING),
    control_net: ControlNet = Input(CONTROL_NET),
    image: Image = Input(IMAGE, description="the control image (edges, depth, pose...) at the latent's pixel size (ControlImageResize)"),
    strength: float = Field(1.0, ge=0.0, le=10.0, description="scale of the ControlNet's residuals; 0 = off"),
    start_percent: float = Field(0.0, ge=0.0, le=1.0, description="share of Sample's steps after which the ControlNet starts acting"),
    end_percent: float = Field(1.0, ge=0.0, le=1.0, description="share of Sample's steps after which it stops"),
    guess_mode: bool = Field(False, description="steer the positive prompt only, deep residuals weighted most "
                             "(diffusers' guess mode); the negative is left as it is"),
) -> tuple[Conditioning, Conditioning]:
    """Attach a ControlNet with its control image to positive and negative; chain several for multi-ControlNet.

    Each application keeps its own image, strength and step range; Sample adds up the residuals of every
    ControlNet in the chain. ``strength`` 0 returns the conditionings unchanged. A ControlNet that pools its
    residuals over the picture (the shuffle model) always acts in guess mode, as in diffusers."""
    if start_percent >= end_percent:
        raise NodeInputError("end_percent", "the ControlNet would never act: end_percent must be after start_percent",
                             f"more than {start_percent}", end_percent)
    if strength == 0:
        return positive, negative
    guess = guess_mode or control_net.global_pool
    control = Control(control_net=control_net, image=image.pixels, strength=strength, start=start_percent,
                      end=end_percent, guess_mode=guess)
    with_control = positive.replace(controls=positive.controls + (control,))
    return with_control, negative if guess else negative.replace(controls=negative.controls + (control,))


# ---------------------------------------------------------------------------------------------------------------
# Sampling: the residuals of a Sample run's ControlNets
# ---------------------------------------------------------------------------------------------------------------

Residuals = "tuple[list[torch.Tensor], torch.Tensor]"  # one per UNet input block, and the middle block's


@dataclass(frozen=True)
class ControlResiduals:
    """A Sample run's ControlNets with their control images ready for the latent batch (channels first, on each
    ControlNet's device): ``cond`` acts on the positive, ``uncond`` on the negative half of a CFG batch (None
    without CFG). ``shared``: the same chain on both halves, run once over the whole batch as diffusers does."""

    cond: "tuple[tuple[Control, torch.Tensor], ...]"
    uncond: "tuple[tuple[Control, torch.Tensor], ...] | None"
    shared: bool
    device: "torch.device"
    dtype: "torch.dtype"

    def unet_kwargs(self, model_input: "torch.Tensor", t, embeds: "torch.Tensor", step: int, steps: int,
                    added: "dict[str, torch.Tensor] | None" = None) -> dict:
        """The UNet's residual inputs for step ``step`` of ``steps``; none when no ControlNet acts at this step.
        ``added``: an SDXL UNet's added conditioning (pooled text, size ids) for the batch, as the UNet gets it."""
        if self.uncond is None or self.shared:
            total = self._sum(self.cond, model_input, t, embeds, added, step, steps, doubled=self.uncond is not None)
        else:
            half = model_input.shape[0] // 2
            halves = [None, None] if added is None else [{k: v[:half] for k, v in added.items()},
                                                          {k: v[half:] for k, v in added.items()}]
            negative = self._sum(self.uncond, model_input[:half], t, embeds[:half], halves[0], step, steps)
            positive = self._sum(self.cond, model_input[half:], t, embeds[half:], halves[1], step, steps)
            total = _stacked(negative, positive)
        if total is None:
            return {}
        return {"down_block_additional_residuals": total[0], "mid_block_additional_residual": total[1]}

    def _sum(self, chain, sample, t, embeds, added, step: int, steps: int, doubled: bool = False) -> "Residuals | None":
        def acts(control: Control) -> bool:  # diffusers' controlnet_keep
            return not (step / steps < control.start or (step + 1) / steps > control.end)

        return chain_residuals(chain, sample, t, embeds, acts, self.device, self.dtype, repeats=2 if doubled else 1,
                               added=added)


def chain_residuals(chain, sample, t, embeds, acts, device, dtype, repeats: int = 1,
                    added: "dict[str, torch.Tensor] | None" = None) -> "Residuals | None":
    """The summed residuals of the ControlNets of ``chain`` ((Control, hint) pairs) for which ``acts(control)``,
    on ``device`` / ``dtype``; each hint repeated ``repeats`` times along the batch (a batch of several prompts'
    rows); None when none acts. ``added``: SDXL's added conditioning of the same rows, which SDXL ControlNets
    embed as their UNet does. graphflow's Sample and comfy.KSampler both call this."""
    total = None
    for control, hint in chain:
        if not acts(control):
            continue
        net = control.control_net.module
        weight = next(net.parameters())
        extra = {} if added is None else {
            "added_cond_kwargs": {k: v.to(weight.device, weight.dtype) for k, v in added.items()}}
        down, mid = net(sample.to(weight.device, weight.dtype), t,
                        encoder_hidden_states=embeds.to(weight.device, weight.dtype),
                        controlnet_cond=torch.cat([hint] * repeats) if repeats > 1 else hint,
                        conditioning_scale=control.strength, guess_mode=control.guess_mode, return_dict=False, **extra)
        down = [d.to(device, dtype) for d in down]
        mid = mid.to(device, dtype)
        total = (down, mid) if total is None else ([a + b for a, b in zip(total[0], down)], total[1] + mid)
    return total


def _stacked(negative: "Residuals | None", positive: "Residuals | None") -> "Residuals | None":
    """[negative, positive] halves of the CFG batch; a half without any ControlNet acting gets zeros."""
    if negative is None and positive is None:
        return None
    negative = negative or _zeros(positive)
    positive = positive or _zeros(negative)
    return [torch.cat([n, p]) for n, p in zip(negative[0], positive[0])], torch.cat([negative[1], positive[1]])


def _zeros(residuals: "Residuals") -> "Residuals":
    return [torch.zeros_like(d) for d in residuals[0]], torch.zeros_like(residuals[1])


def control_residuals(model: Model, positive: Conditioning, negative: Conditioning | None, guidance: bool,
                      latent: Latent) -> ControlResiduals | None:
    """The ControlNets of a Sample run checked against the UNet and the latent; None when there are none."""
    uncond = negative.controls if guidance and negative is not None else None
    if not positive.controls and not uncond:
        return None
    prepared = {}
    for name, controls in (("positive", positive.controls), ("negative", uncond or ())):
        for control in controls:
            if id(control) not in prepared:
                prepared[id(control)] = (control, _hint(model, control, latent, name))
    shared = uncond is not None and len(uncond) == len(positive.controls) and all(
        a is b for a, b in zip(uncond, positive.controls))
    return ControlResiduals(
        cond=tuple(prepared[id(c)] for c in positive.controls),
        uncond=None if uncond is None else tuple(prepared[id(c)] for c in uncond),
        shared=shared, device=model.device, dtype=model.dtype)


def _hint(model: Model, control: Control, latent: Latent, name: str) -> "torch.Tensor":
    """The control image as its ControlNet takes it: (B, 3, H, W) for the latent batch, on its device and dtype."""
    net = control.control_net
    check_fits(model, net, int(latent.samples.shape[1]), name)
    batch, height, width = latent.batch_size, *(int(s) * net.downscale for s in latent.samples.shape[-2:])
    images, image_height, image_width = (int(s) for s in control.image.shape[:3])
    if (image_height, image_width) != (height, width):
        raise NodeInputError(name, f"the control image of ControlNet {net.name} is {image_width}×{image_height}, the "
                             f"latent's pixel size is {width}×{height} (resize it with ControlImageResize)",
                             f"{width}×{height}", f"{image_width}×{image_height}")
    if batch % images:
        raise NodeInputError(name, f"{images} control images cannot be spread over a latent batch of {batch}",
                             f"1 or a divisor of {batch}", images)
    weight = next(net.module.parameters())
    hint = control.image.permute(0, 3, 1, 2).repeat_interleave(batch // images, dim=0)
    return hint.to(weight.device, weight.dtype)


def check_fits(model: Model, net: ControlNet, channels: int, name: str) -> None:
    """That ControlNet ``net`` was made for this UNet (family, block sizes, text width, SDXL's added embedding) and
    ``channels``-channel latents."""
    config, unet = net.module.config, model.unet.config
    if net.family != model.family:
        raise NodeInputError(name, f"ControlNet {net.name} is for {net.family} models, the UNet is {model.family}",
                             f"a {model.family} ControlNet", net.family)
    if _architecture(config) != _architecture(unet):
        raise NodeInputError(name, f"ControlNet {net.name} was made for a UNet of another size",
                             _architecture(unet), _architecture(config))
    if config.in_channels != channels:
        raise NodeInputError(name, f"ControlNet {net.name} takes {config.in_channels}-channel latents",
                             config.in_channels, channels)


def _architecture(config) -> str:
    """What a ControlNet shares with its UNet, in words: the residuals' shapes (blocks), the text width and SDXL's
    added embedding (its inputs). The transformer depth may differ (SDXL's distilled "small" / "mid" ControlNets)."""
    words = f"blocks {list(config.block_out_channels)} × {config.layers_per_block}, text width {config.cross_attention_dim}"
    if config.addition_embed_type == "text_time":
        words += (f", added embedding of {config.projection_class_embeddings_input_dim} values "
                  f"({config.addition_time_embed_dim}-wide size ids)")
    return words
