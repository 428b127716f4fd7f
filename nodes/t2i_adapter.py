"""T2I-Adapters: LoadT2IAdapter (T2I_ADAPTER), ApplyT2IAdapter (CONDITIONING), and the features Sample adds.

Models (README section)
-----------------------
T2I-Adapters go in ``models/t2i_adapter/`` or beside the ControlNets in ``models/controlnet/`` (ComfyUI keeps them
there; its ``extra_model_paths.yaml`` key ``t2i_adapter`` counts too): a diffusers T2IAdapter folder (``config.json``
naming ``T2IAdapter`` + weights, e.g. TencentARC's ``t2i-adapter-*-sdxl-1.0``), or a single file ``<name>``,
``.safetensors``, ``.pth``, ``.ckpt`` or ``.pt``: TencentARC's original releases (``t2iadapter_*_sd14v1.pth``,
``t2iadapter_*_sd15v2.pth``, the light colour adapter) or a diffusers folder's weights on their own (keys
``adapter.*``, ComfyUI's ``t2i-adapter_diffusers_xl_*.safetensors``). They load offline from the configs shipped in
``nodes/models/configs/t2i-adapter-*``, every size read from the weights; a tensor the architecture lacks, or one
it needs that the file lacks, is an error. ``tiny-sd-t2i-adapter`` and ``tiny-sdxl-t2i-adapter`` are built in:
random adapters shaped for ``tiny-sd`` and ``tiny-sdxl`` (for tests; their effect is noise on noise).

How it samples (diffusers' StableDiffusionAdapterPipeline / StableDiffusionXLAdapterPipeline): before the first
step each adapter turns its control image into one feature map per UNet down block, from the first (and, for SDXL,
one for the middle block), times ``strength``; the features of every adapter on a conditioning are added up, and at each step
the UNet adds them to its down blocks' outputs (diffusers' ``down_intrablock_additional_residuals``). An adapter
acts on step i of the N that Sample runs while ``i < int(N · end_percent)`` (``adapter_conditioning_factor``), on
both halves of the CFG batch. ControlNets and adapters combine: the UNet takes both.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import Field

from graphflow.context import RunContext
from graphflow.errors import NodeInputError
from graphflow.node import Input, node

from .builtin_models import TINY_SEED, TINY_VERSION, cache_dir, save_built, tiny_sd_folder
from .builtin_sdxl import TINY_SDXL_VERSION, tiny_sdxl_folder
from .checkpoints.common import read_json
from .checkpoints.t2i_adapter import XL_UNSHUFFLE, is_adapter_folder, load_adapter_file, load_adapter_folder
from .loaders import Device, Dtype, load_or_name_error, model_fingerprint, model_preflight, pick_device, pick_dtype, resolve
from .model_folders import kind_folders
from .unet_inputs import UNetInputs
from .values import (CONDITIONING, IMAGE, T2I_ADAPTER, AdapterControl, Conditioning, Image, Latent, Model,
                     T2IAdapter)

ADAPTER_SUFFIXES = (".safetensors", ".pth", ".ckpt", ".pt")
TINY_SD_ADAPTER, TINY_SDXL_ADAPTER = "tiny-sd-t2i-adapter", "tiny-sdxl-t2i-adapter"


# ---------------------------------------------------------------------------------------------------------------
# Built-in tiny adapters
# ---------------------------------------------------------------------------------------------------------------

def adapter_config_for(unet_config, vae_config) -> dict[str, Any]:
    """A T2IAdapter config whose features fit as many of a UNet's down blocks (and its middle block) as one of
    diffusers' layouts can, for control images at the VAE's pixel size.

    A block with attention takes its feature before its downsampler, one without after it (UNet2DConditionModel), so
    each block's feature sits some halvings below the first's: 0, 1, 2, ... is SD 1.x's layout (``full_adapter``),
    0, 0, 1, 1 SDXL's (``full_adapter_xl``, the middle block taking the fourth). The unshuffle factor puts the first
    feature where the first block wants it."""
    blocks, widths = list(unet_config["down_block_types"]), list(unet_config["block_out_channels"])
    levels = [i if "CrossAttn" in kind or i == len(blocks) - 1 else i + 1 for i, kind in enumerate(blocks)]
    levels.append(len(blocks) - 1)  # the middle block, after the last down block
    halvings, widths = [level - levels[0] for level in levels], widths + widths[-1:]

    def fits(pattern) -> int:  # how many features of the pattern match the UNet's, from the first
        return next((k for k in range(len(pattern)) if halvings[k] != pattern[k]), len(pattern))

    full, xl = fits(range(len(halvings))), fits([0, 0, 1, 1][:len(halvings)])
    kind, count = ("full_adapter_xl", xl) if xl > full else ("full_adapter", full)
    vae_factor = 2 ** (len(vae_config["block_out_channels"]) - 1)
    return {"adapter_type": kind, "channels": widths[:count], "downscale_factor": vae_factor * 2 ** levels[0],
            "in_channels": 3, "num_res_blocks": 2}


def build_tiny_adapter(unet_config, vae_config, seed: int) -> torch.nn.Module:
    """A fresh random T2IAdapter for a tiny model's UNet and VAE (configs), identical for the same seed.

    PyTorch's default initialisation would give features a hundredth of the UNet's hidden states; these
    convolutions keep the scale of their input (std √(2 / fan-in)), so the control image visibly changes what
    the UNet predicts and parity tests measure something."""
    torch.manual_seed(seed)
    from diffusers import T2IAdapter as DiffusersAdapter

    adapter = DiffusersAdapter(**adapter_config_for(unet_config, vae_config))
    for convolution in (m for m in adapter.modules() if isinstance(m, torch.nn.Conv2d)):
        torch.nn.init.normal_(convolution.weight, std=(2 / convolution.weight[0].numel()) ** 0.5)
    return adapter.eval()


def tiny_adapter_folder(sdxl: bool) -> Path:
    """Path of a built-in tiny adapter's diffusers folder, building it on first use from its model's configs; the
    folder's name changes with the model's version."""
    name, version, model = ((TINY_SDXL_ADAPTER, TINY_SDXL_VERSION, tiny_sdxl_folder) if sdxl
                            else (TINY_SD_ADAPTER, TINY_VERSION, tiny_sd_folder))
    folder = cache_dir() / "builtin" / f"{name}-v{version}"
    if not (folder / "config.json").exists():
        base = model()
        adapter = build_tiny_adapter(read_json(base / "unet" / "config.json"), read_json(base / "vae" / "config.json"),
                                     seed=TINY_SEED + (107 if sdxl else 7))
        save_built(adapter, folder)
    return folder


def control_image_factor(adapter: T2IAdapter) -> int:
    """Control image ÷ latent size: the pixel-unshuffle's factor, halved where the first feature is at half the
    latent's size — SDXL's layout, and any adapter unshuffling by SDXL's 16 (SDXL's first block, without attention,
    takes its feature after downsampling): every released adapter and the built-in ones."""
    config = adapter.module.config
    halved = config.adapter_type == "full_adapter_xl" or config.downscale_factor == XL_UNSHUFFLE
    return int(config.downscale_factor) // (2 if halved else 1)


BUILTIN_VERSIONS = {TINY_SD_ADAPTER: TINY_VERSION, TINY_SDXL_ADAPTER: TINY_SDXL_VERSION}


def builtin_adapters() -> dict:
    return {TINY_SD_ADAPTER: lambda: tiny_adapter_folder(sdxl=False), TINY_SDXL_ADAPTER: lambda: tiny_adapter_folder(sdxl=True)}


# ---------------------------------------------------------------------------------------------------------------
# Nodes
# ---------------------------------------------------------------------------------------------------------------

def adapter_dirs(models_dir: Path) -> list[Path]:
    """models/t2i_adapter, then the ControlNet folders (ComfyUI keeps T2I-Adapters with the ControlNets)."""
    return list(dict.fromkeys([Path(models_dir) / "t2i_adapter", *kind_folders(models_dir, "controlnet")]))


_SEARCH = (adapter_dirs, ADAPTER_SUFFIXES, is_adapter_folder, builtin_adapters)


@node(outputs={"t2i_adapter": T2I_ADAPTER}, category="loaders", pool="model",
      fingerprint=model_fingerprint(*_SEARCH, versions=BUILTIN_VERSIONS), preflight=model_preflight(*_SEARCH))
def LoadT2IAdapter(
    name: Annotated[str, Field(description="built-in name, or a diffusers folder / file in models/t2i_adapter/ or models/controlnet/")] = TINY_SD_ADAPTER,
    dtype: Dtype = "auto",
    device: Device = "auto",
    *,
    ctx: RunContext,
) -> T2IAdapter:
    """Load a T2I-Adapter (SD 1.x or SDXL): a diffusers folder, or a single file in TencentARC's or diffusers' layout."""
    folders_of, suffixes, is_folder, builtins = _SEARCH
    target = pick_device(device)
    path = resolve(name, folders_of(ctx.settings.models_dir), suffixes, is_folder, builtins)
    torch_dtype = pick_dtype(dtype, target)
    read = load_adapter_folder if path.is_dir() else load_adapter_file
    module = load_or_name_error(name, path, lambda: read(path, torch_dtype), "a T2I-Adapter")
    return T2IAdapter(module=module.to(target), name=name)


@node(outputs={"positive": CONDITIONING, "negative": CONDITIONING}, category="conditioning")
def ApplyT2IAdapter(
    positive: Conditioning = Input(CONDITIONING),
    negative: Conditioning = Input(CONDITIONING),
    t2i_adapter: T2IAdapter = Input(T2I_ADAPTER),
    image: Image = Input(IMAGE, description="the control image (edges, depth, pose...) at the latent's pixel size (ControlImageResize)"),
    strength: float = Field(1.0, ge=0.0, le=10.0, description="scale of the adapter's features (diffusers' adapter_conditioning_scale); 0 = off"),
    end_percent: float = Field(1.0, ge=0.0, le=1.0, description="share of Sample's steps, from the first, the adapter acts on (diffusers' adapter_conditioning_factor); 0 = off"),
) -> tuple[Conditioning, Conditioning]:
    """Attach a T2I-Adapter with its control image to positive and negative; chain several to add their features.

    A grey-image adapter (sketch) takes the mean of the image's channels. ``strength`` 0 or ``end_percent`` 0
    returns the conditionings unchanged."""
    if strength == 0 or end_percent == 0:
        return positive, negative
    control = AdapterControl(adapter=t2i_adapter, image=image.pixels, strength=strength, end=end_percent)
    return (positive.replace(adapters=positive.adapters + (control,)),
            negative.replace(adapters=negative.adapters + (control,)))


# ---------------------------------------------------------------------------------------------------------------
# Sampling: the adapters' features for the UNet's down blocks
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AdapterFeatures:
    """A UNetInputs step input: per CFG half ([negative, positive], or the positive alone) the adapters with their
    scaled features for that half's latents; each step gets the sum of those acting at it (zeros on a half with none)."""

    halves: "tuple[tuple[tuple[AdapterControl, list[torch.Tensor]], ...], ...]"

    def __call__(self, sample, t, step: int, steps: int, kwargs: dict) -> dict:
        sums = [_acting_sum(half, step, steps) for half in self.halves]
        present = next((s for s in sums if s is not None), None)
        if present is None:
            return {}
        sums = [s if s is not None else [torch.zeros_like(f) for f in present] for s in sums]
        return {"down_intrablock_additional_residuals": [torch.cat(parts) for parts in zip(*sums)]}


def _acting_sum(half, step: int, steps: int) -> "list[torch.Tensor] | None":
    total = None
    for control, features in half:
        if step < int(steps * control.end):
            total = list(features) if total is None else [a + b for a, b in zip(total, features)]
    return total


def with_adapters(inputs: UNetInputs, model: Model, positive: Conditioning, negative: Conditioning | None,
                  guidance: bool, latent: Latent) -> UNetInputs:
    """Sample's UNet inputs with the conditionings' T2I-Adapters as a step input; unchanged without any."""
    sides = [("negative", negative), ("positive", positive)] if guidance and negative is not None else [("positive", positive)]
    if not any(conditioning.adapters for _, conditioning in sides):
        return inputs
    computed: dict[int, list[torch.Tensor]] = {}
    for name, conditioning in reversed(sides):  # positive first: an error about a shared adapter names it
        for control in conditioning.adapters:
            if id(control) not in computed:
                computed[id(control)] = adapter_features(model, control, latent, name)
    halves = [tuple((control, computed[id(control)]) for control in conditioning.adapters) for _, conditioning in sides]
    return replace(inputs, step_inputs=inputs.step_inputs + (AdapterFeatures(tuple(halves)),))


def unet_feature_shapes(unet, height: int, width: int) -> "tuple[list[tuple[int, int, int]], tuple[int, int, int]]":
    """(channels, h, w) of what the UNet adds an adapter feature to, per down block, at a ``height`` × ``width``
    latent, and the middle block's: a block with attention adds it before its downsampler, one without after (see
    adapter_config_for)."""
    shapes = []
    for block, channels in zip(unet.down_blocks, unet.config.block_out_channels):
        after = ((height + 1) // 2, (width + 1) // 2) if block.downsamplers is not None else (height, width)
        shapes.append((int(channels), *((height, width) if getattr(block, "has_cross_attention", False) else after)))
        height, width = after
    return shapes, (int(unet.config.block_out_channels[-1]), height, width)


def _layout(shapes) -> list[str]:
    """Feature shapes as their channels and size relative to the first: ``320@1/2``."""
    return [f"{c}@1/{shapes[0][1] // h}" for c, h, _ in shapes]


def check_fits(model: Model, adapter: T2IAdapter, name: str) -> None:
    """That the adapter's features fit the UNet's blocks, in channels and in where each halves (an adapter for another
    family can have the same channels): read from the adapter's features for a blank probe image."""
    module = adapter.module
    weight = next(module.parameters())
    side = 4 * int(module.total_downscale_factor)
    with torch.no_grad():
        probe = module(torch.zeros(1, int(module.config.in_channels), side, side, device=weight.device, dtype=weight.dtype))
    got = _layout([tuple(int(s) for s in f.shape[1:]) for f in probe])
    size = 2 ** (len(model.unet.down_blocks) + 1)
    shapes, middle = unet_feature_shapes(model.unet, size, size)
    wanted = _layout(shapes + [middle])
    if got != wanted[:len(got)]:  # the UNet adds features to its blocks in order, as many as there are
        raise NodeInputError(name, f"T2I-Adapter {adapter.name} was made for a UNet of another layout (another model "
                             "family?)", f"features {wanted[:-1]} or the first of them, maybe one more for the middle "
                             f"block: {wanted[-1]}", f"features {got}")


def adapter_features(model: Model, control: AdapterControl, latent: Latent, name: str) -> "list[torch.Tensor]":
    """One adapter's features for the latent batch, scaled by its strength, on the model's device and dtype; the
    adapter, the control image and the features checked against the UNet's blocks and the latent's size."""
    adapter = control.adapter
    module = adapter.module
    check_fits(model, adapter, name)
    batch, height, width = latent.batch_size, *(int(s) for s in latent.samples.shape[-2:])
    shapes, middle = unet_feature_shapes(model.unet, height, width)
    factor = int(module.downscale_factor)
    expected = (shapes[0][1] * factor, shapes[0][2] * factor)
    images, image_height, image_width = (int(s) for s in control.image.shape[:3])
    if (image_height, image_width) != expected:
        raise NodeInputError(name, f"T2I-Adapter {adapter.name} takes a {expected[1]}×{expected[0]} control image for "
                             f"this {width}×{height} latent, the image is {image_width}×{image_height} (resize it "
                             "with ControlImageResize)", f"{expected[1]}×{expected[0]}", f"{image_width}×{image_height}")
    if batch % images:
        raise NodeInputError(name, f"{images} control images cannot be spread over a latent batch of {batch}",
                             f"1 or a divisor of {batch}", images)
    weight = next(module.parameters())
    pixels = control.image.permute(0, 3, 1, 2)
    if int(module.config.in_channels) == 1:  # a grey-image adapter (sketch): the mean of the channels, as ComfyUI does
        pixels = pixels.mean(dim=1, keepdim=True)
    with torch.no_grad():
        features = module(pixels.to(weight.device, weight.dtype))
    got = [tuple(int(s) for s in f.shape[1:]) for f in features]
    if got != (shapes + [middle])[:len(got)]:
        raise NodeInputError(name, f"T2I-Adapter {adapter.name} gives features of other sizes than this "
                             f"{width}×{height} latent's UNet blocks", f"{shapes} (+ {middle} for the middle block)", got)
    return [(f * control.strength).repeat_interleave(batch // images, dim=0).to(model.device, model.dtype) for f in features]
