"""Checkpoint merging as in the WebUI's checkpoint merger, one small node per component (SaveCheckpoint, in
:mod:`nodes.outputs`, writes the result).

``weighted_sum``:   A·(1−α) + B·α
``add_difference``: A + (B − C)·α   (e.g. A = your model, B = an inpainting model, C = the base B came from)

Every tensor is computed in float32 and stored in A's dtype; the result is a NEW module (A, B and C are
not touched) whose structure, config, tokenizer, scheduler settings and name come from A. The two (or
three) inputs must have the same architecture: same state-dict keys with the same shapes; the first
difference is reported by name. Non-float tensors (integer buffers) must be equal and are taken from A.

MergeModels / MergeClip / MergeVae are separate so a workflow can merge the UNet and keep A's text
encoder and VAE (the WebUI's "copy config/VAE from A" options), or merge each with its own α.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Literal

import torch
from pydantic import Field

from graphflow.context import RunContext
from graphflow.errors import InvalidArgument, NodeInputError, node_inputs
from graphflow.node import Input, node

from .patching import clone_with_weights
from .values import CLIP, MODEL, VAE, Clip, Model, Vae

MergeMode = Literal["weighted_sum", "add_difference"]
ALPHA = Field(0.5, ge=0.0, le=1.0, description="α: weight of B (weighted_sum) or of the difference B − C (add_difference)")
MODE = Field("weighted_sum", description="weighted_sum: A·(1−α) + B·α; add_difference: A + (B − C)·α (needs C)")


def merge_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], c: dict[str, torch.Tensor] | None,
                mode: MergeMode, alpha: float, check: Callable[[], None] | None = None) -> dict[str, torch.Tensor]:
    """The merged state dict (A's dtypes and devices). Raises InvalidArgument on ``b``, ``c`` or ``mode``
    naming the first mismatch. ``check`` (a node's ``ctx.check_cancelled``) runs before each tensor."""
    check_same_layout(a, b, "b")
    if mode == "add_difference":
        if c is None:
            raise InvalidArgument("c", "add_difference needs a third model C (A + (B − C)·α)", "a link", None)
        check_same_layout(a, c, "c")
    elif mode != "weighted_sum":
        raise InvalidArgument("mode", "unknown merge mode", "weighted_sum or add_difference", mode)
    merged = {}
    for key, ta in a.items():
        if check is not None:
            check()
        tb = b[key]
        if not ta.is_floating_point():
            if not torch.equal(ta, tb.to(ta.device)):
                raise InvalidArgument("b", f"non-float tensor {key!r} differs between A and B")
            continue
        fa, fb = ta.float(), tb.to(ta.device).float()
        if mode == "weighted_sum":
            value = fa * (1 - alpha) + fb * alpha
        else:
            value = fa + (fb - c[key].to(ta.device).float()) * alpha
        merged[key] = value.to(ta.dtype)
    return merged


def check_same_layout(a: dict[str, torch.Tensor], other: dict[str, torch.Tensor], argument: str) -> None:
    """Same keys with the same shapes as A, or an InvalidArgument on ``argument`` (the other's name: "b" or
    "c") naming the first difference."""
    which = argument.upper()
    for key, ta in a.items():
        if key not in other:
            raise InvalidArgument(argument, f"incompatible architectures: A has {key!r}, {which} does not",
                                  "the keys of A", f"no {key}")
        if tuple(ta.shape) != tuple(other[key].shape):
            raise InvalidArgument(argument, f"incompatible architectures: {key!r} has a different shape",
                                  f"{tuple(ta.shape)} as in A", tuple(other[key].shape))
    extra = next((key for key in other if key not in a), None)
    if extra is not None:
        raise InvalidArgument(argument, f"incompatible architectures: {which} has {extra!r}, A does not",
                              "the keys of A", extra)


def merge_modules(a: torch.nn.Module, b: torch.nn.Module, c: torch.nn.Module | None, mode: MergeMode,
                  alpha: float, check: Callable[[], None] | None = None) -> torch.nn.Module:
    state = merge_state(a.state_dict(), b.state_dict(), c.state_dict() if c is not None else None, mode, alpha, check)
    return clone_with_weights(a, state)


def _label(mode: MergeMode, alpha: float, b, c) -> str:
    """Patch label naming what was merged in, with what had been applied to it (``name[lora:x:1]``)."""
    def describe(value) -> str:
        return value.name + (f"[{','.join(value.patches)}]" if value.patches else "")

    return f"merge:{mode}:{alpha:g}:{describe(b)}" + (f"-{describe(c)}" if mode == "add_difference" and c else "")


@node(outputs={"model": MODEL}, category="merge", pool="model")
def MergeModels(
    model_a: Model = Input(MODEL),
    model_b: Model = Input(MODEL),
    model_c: Model | None = Input(MODEL, optional=True, description="C for add_difference"),
    mode: MergeMode = MODE,
    alpha: float = ALPHA,
    *,
    ctx: RunContext,
) -> Model:
    """Merge two UNets (or add the difference B − C to A); scheduler settings come from A."""
    if model_b.prediction_type != model_a.prediction_type:
        ctx.warn(f"model_a predicts {model_a.prediction_type}, model_b {model_b.prediction_type}; the merge keeps "
                 f"model_a's {model_a.prediction_type}")
    with node_inputs(a="model_a", b="model_b", c="model_c"):
        unet = merge_modules(model_a.unet, model_b.unet, model_c.unet if model_c is not None else None, mode, alpha,
                             ctx.check_cancelled)
    label = _label(mode, alpha, model_b, model_c)
    return replace(model_a, unet=unet, patches=model_a.patches + (label,))


def encoder_count(clip: Clip) -> int:
    return 1 if clip.text_encoder_2 is None else 2


@node(outputs={"clip": CLIP}, category="merge", pool="model")
def MergeClip(
    clip_a: Clip = Input(CLIP),
    clip_b: Clip = Input(CLIP),
    clip_c: Clip | None = Input(CLIP, optional=True, description="C for add_difference"),
    mode: MergeMode = MODE,
    alpha: float = ALPHA,
    *,
    ctx: RunContext,
) -> Clip:
    """Merge two text encoders (or add the difference B − C to A); tokenizer and embeddings come from A.

    SDXL's second text encoders are merged the same way; CLIPs with different numbers of encoders are refused."""
    for name, other in (("clip_b", clip_b), ("clip_c", clip_c)):
        if other is not None and (other.text_encoder_2 is None) != (clip_a.text_encoder_2 is None):
            raise NodeInputError(name, "CLIPs with different numbers of text encoders cannot be merged",
                                 f"{encoder_count(clip_a)} like clip_a", encoder_count(other))
    with node_inputs(a="clip_a", b="clip_b", c="clip_c"):
        encoder = merge_modules(clip_a.text_encoder, clip_b.text_encoder,
                                clip_c.text_encoder if clip_c is not None else None, mode, alpha, ctx.check_cancelled)
        second = clip_a.text_encoder_2
        if second is not None:
            second = merge_modules(clip_a.text_encoder_2, clip_b.text_encoder_2,
                                   clip_c.text_encoder_2 if clip_c is not None else None, mode, alpha, ctx.check_cancelled)
    label = _label(mode, alpha, clip_b, clip_c)
    return replace(clip_a, text_encoder=encoder, text_encoder_2=second, patches=clip_a.patches + (label,))


@node(outputs={"vae": VAE}, category="merge", pool="model")
def MergeVae(
    vae_a: Vae = Input(VAE),
    vae_b: Vae = Input(VAE),
    vae_c: Vae | None = Input(VAE, optional=True, description="C for add_difference"),
    mode: MergeMode = MODE,
    alpha: float = ALPHA,
    *,
    ctx: RunContext,
) -> Vae:
    """Merge two VAEs (or add the difference B − C to A)."""
    with node_inputs(a="vae_a", b="vae_b", c="vae_c"):
        merged = merge_modules(vae_a.vae, vae_b.vae, vae_c.vae if vae_c is not None else None, mode, alpha,
                               ctx.check_cancelled)
    return replace(vae_a, vae=merged)
