"""Text encoders as original-layout files store them, each converted to and from transformers' CLIPTextModel.

A :class:`TextLayout` is one storage format (OpenAI CLIP as SD 1.x ships it, OpenCLIP as SD 2.x does); the
prefix under which a family keeps it belongs to the family (``families.py``), so a family with a second text
encoder can reuse a layout under another prefix."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

import torch

from .common import indices, shape
from .keymap import swap_prefix

Weights = dict[str, "torch.Tensor"]  # torch is not touched at import (see nodes/__init__.py)


def clip_from_original(weights: Weights) -> Weights:
    """SD1's OpenAI CLIP is stored with transformers' own names below ``text_model.`` (a few early files lack that
    level, and transformers 5 has none). ``position_ids`` is a constant buffer older versions saved."""
    weights = {k.removeprefix("text_model."): v for k, v in weights.items()}
    return {k: v for k, v in weights.items() if k != "embeddings.position_ids"}


def clip_to_original(weights: Weights) -> Weights:
    return {"text_model." + k: v for k, v in weights.items()}


OPENCLIP_NAMES = [  # (transformers name, OpenCLIP name) inside one transformer layer
    ("layer_norm1.", "ln_1."), ("layer_norm2.", "ln_2."), ("mlp.fc1.", "mlp.c_fc."), ("mlp.fc2.", "mlp.c_proj."),
    ("self_attn.out_proj.", "attn.out_proj."),
]
OPENCLIP_TOP = [("embeddings.token_embedding.weight", "token_embedding.weight"),
                ("embeddings.position_embedding.weight", "positional_embedding"),
                ("final_layer_norm.weight", "ln_final.weight"), ("final_layer_norm.bias", "ln_final.bias")]


def openclip_from_original(weights: Weights, keep_last: bool = False) -> Weights:
    """SD2's OpenCLIP ViT-H text tower → CLIPTextModel. SD2 conditions on the penultimate layer, so the last
    block (and the unused ``text_projection`` / ``logit_scale``) is not part of the text encoder, unless
    ``keep_last``."""
    blocks = indices(weights, "transformer.resblocks.")
    last = -1 if keep_last or not blocks else blocks[-1]
    top = {original: ours for ours, original in OPENCLIP_TOP}
    out: Weights = {}
    for key, value in weights.items():
        if key in ("text_projection", "logit_scale", "attn_mask") or key.startswith(f"transformer.resblocks.{last}."):
            continue
        match = re.fullmatch(r"transformer\.resblocks\.(\d+)\.(.+)", key)
        if not match:
            out[top.get(key, key)] = value
            continue
        layer, rest = f"encoder.layers.{match[1]}.", match[2]
        if rest.startswith("attn.in_proj_"):  # q, k and v stacked in one tensor
            kind = rest.removeprefix("attn.in_proj_")
            for name, part in zip("qkv", value.chunk(3, dim=0)):
                out[f"{layer}self_attn.{name}_proj.{kind}"] = part
            continue
        out[layer + swap_prefix(rest, [(oc, hf) for hf, oc in OPENCLIP_NAMES])] = value
    return out


def openclip_to_original(weights: Weights, identity_block: bool = True) -> Weights:
    """Inverse of :func:`openclip_from_original`. The dropped final block is written as an exact identity
    (all-zero weights: both residual branches add zero), so tools that take the penultimate layer of a
    full tower get the same conditioning graphflow computes (not when ``identity_block`` is off)."""
    top = dict(OPENCLIP_TOP)
    out: Weights = {}
    layers = indices(weights, "encoder.layers.")
    for key, value in weights.items():
        if key in top:
            out[top[key]] = value
            continue
        match = re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)", key)
        if not match:
            out[key] = value
            continue
        layer, rest = f"transformer.resblocks.{match[1]}.", match[2]
        if re.fullmatch(r"self_attn\.[qkv]_proj\.(weight|bias)", rest):
            if rest.startswith("self_attn.q_proj."):
                kind = rest.rsplit(".", 1)[1]
                parts = [weights[f"encoder.layers.{match[1]}.self_attn.{n}_proj.{kind}"] for n in "qkv"]
                out[f"{layer}attn.in_proj_{kind}"] = torch.cat(parts, dim=0)
            continue
        out[layer + swap_prefix(rest, OPENCLIP_NAMES)] = value
    if layers and identity_block:
        template, identity = f"transformer.resblocks.{layers[0]}.", f"transformer.resblocks.{layers[-1] + 1}."
        for key in [k for k in out if k.startswith(template)]:
            out[identity + key[len(template):]] = torch.zeros_like(out[key])
    return out


def openclip_g_from_original(weights: Weights) -> Weights:
    """SDXL's OpenCLIP ViT-bigG text tower → CLIPTextModelWithProjection: every block (the pooled embedding is
    read after the last one), ``text_projection`` transposed (OpenCLIP multiplies ``x @ P``, a Linear stores Pᵀ)
    and the training-only ``logit_scale`` left out."""
    projection = weights.get("text_projection")
    tower = {k: v for k, v in weights.items() if k != "text_projection"}
    out = {"text_model." + k: v for k, v in openclip_from_original(tower, keep_last=True).items()}
    if projection is not None:
        out["text_projection.weight"] = projection.t()
    return out


def openclip_g_to_original(weights: Weights) -> Weights:
    """Inverse of :func:`openclip_g_from_original` (``logit_scale`` is not part of the model; SDXL files store
    it, so it is written as OpenCLIP's initial value, ln(1/0.07))."""
    tower = {k.removeprefix("text_model."): v for k, v in weights.items() if k.startswith("text_model.")}
    out = openclip_to_original(tower, identity_block=False)
    if "text_projection.weight" in weights:
        out["text_projection"] = weights["text_projection.weight"].t()
    reference = next(iter(weights.values()))
    out["logit_scale"] = torch.tensor(4.6052, dtype=reference.dtype, device=reference.device)
    return out


@dataclass(frozen=True)
class TextLayout:
    """One way a text encoder is stored in an original-layout file."""

    name: str  # "clip" | "openclip": Detected.text_layout
    hidden_act: str  # the activation in transformers' config: how a diffusers folder's encoder is recognised
    from_original: Callable[[Weights], Weights]  # file keys (family prefix removed) → CLIPTextModel keys
    to_original: Callable[[Weights], Weights]  # the inverse
    model_class: str = "CLIPTextModel"  # the transformers class its weights fill


CLIP = TextLayout("clip", "quick_gelu", clip_from_original, clip_to_original)
OPENCLIP = TextLayout("openclip", "gelu", openclip_from_original, openclip_to_original)
OPENCLIP_G = TextLayout("openclip-g", "gelu", openclip_g_from_original, openclip_g_to_original,
                        "CLIPTextModelWithProjection")


def derive_text_config(text: Weights) -> dict[str, Any]:
    """Text encoder sizes from weights already in transformers' CLIPTextModel (or ...WithProjection) layout."""
    projection = text.get("text_projection.weight")
    text = {k.removeprefix("text_model."): v for k, v in text.items()}
    vocab, hidden = shape(text, "embeddings.token_embedding.weight", "text encoder")
    config = {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "max_position_embeddings": shape(text, "embeddings.position_embedding.weight", "text encoder")[0],
        "num_hidden_layers": len(indices(text, "encoder.layers.")),
        "intermediate_size": shape(text, "encoder.layers.0.mlp.fc1.weight", "text encoder")[0],
    }
    if projection is not None:
        config["projection_dim"] = int(projection.shape[0])
    return config
