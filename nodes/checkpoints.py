"""Stable Diffusion weights in and out: diffusers folders and original-layout single files.

Pure functions, no nodes (``nodes/loaders.py`` wraps them). Three jobs:

* **Read** a single file in the original CompVis / A1111 key layout — ``model.diffusion_model.*`` (UNet),
  ``first_stage_model.*`` (VAE), ``cond_stage_model.transformer.text_model.*`` (SD1, OpenAI CLIP) or
  ``cond_stage_model.model.*`` (SD2, OpenCLIP) — and build diffusers / transformers modules from it fully
  offline. The base configuration comes from the small config folders shipped in ``nodes/models/configs``;
  every size that the weights reveal (channels, depths, widths, vocabulary) is read from the tensor shapes, so
  the same code loads a full-size SD1.5 file and a test-size one written from the built-in tiny model.
* **Detect** the family: cross-attention width 768 → sd1, 1024 → sd2 (other widths: OpenCLIP text encoder → sd2,
  else sd1); a 9-channel UNet ``conv_in`` → inpainting.
* **Write** a model back in the original layout (:func:`save_single_file`), the inverse of the reader.

Every key conversion is a table of prefix pairs (diffusers ↔ original) read in either direction, so the reader and
the writer cannot drift apart. Loading is strict: a weight the architecture needs but the file lacks, or a weight
the file has that the architecture does not use, is an error — never a silently random tensor.
"""
from __future__ import annotations

import json
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .builtin_models import PACKAGE_MODELS, clip_tokenizer

# Diffusers and transformers must never reach for the network: every config they need is local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CONFIGS = PACKAGE_MODELS / "configs"
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."  # followed by "text_model." in every current file
OPENCLIP_PREFIX = "cond_stage_model.model."
METADATA_PREFIX = "graphflow."


class CheckpointError(ValueError):
    """The file cannot be used as a Stable Diffusion checkpoint; the message says why."""


@dataclass(frozen=True)
class Components:
    """What a checkpoint loads into: modules on the CPU plus the facts needed to use them."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: Any
    scheduler_config: dict[str, Any]
    family: str
    prediction_type: str


@dataclass(frozen=True)
class Detected:
    """What the weights of a single file say about the model."""

    family: str  # "sd1" | "sd2"
    inpainting: bool
    cross_attention_dim: int
    text_layout: str | None  # "clip" | "openclip" | None (no text encoder in the file)


# ---------------------------------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------------------------------

def is_safetensors(path: Path) -> bool:
    """A safetensors file starts with an 8-byte header length followed by a JSON object."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < os.path.getsize(path)


def aligned(tensor: torch.Tensor) -> torch.Tensor:
    """safetensors hands out buffers that are not 64-byte aligned; CPU kernels then take other code paths and
    results differ in the last bits from the same weights loaded by diffusers. One copy into torch's allocator
    fixes that (a tensor at a time, so peak memory stays at one model)."""
    return tensor if tensor.data_ptr() % 64 == 0 else tensor.clone()


def read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors of a ``.safetensors`` or ``.ckpt``/``.pt`` file (on the CPU) and the safetensors metadata.

    Pickled files are read with ``weights_only=True`` only: a file that needs arbitrary pickled objects is refused,
    because unpickling runs code from the file."""
    path = Path(path)
    if is_safetensors(path):
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                return {k: aligned(f.get_tensor(k)) for k in f.keys()}, dict(f.metadata() or {})
        except Exception as error:  # safetensors raises its own error type for a damaged header
            raise CheckpointError(f"{path.name} is not a readable safetensors file ({error})") from None
    try:
        loaded = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as error:
        if "weights only" not in str(error).lower():  # a damaged pickle, not a refused one
            raise CheckpointError(f"{path.name} is neither a safetensors file nor a PyTorch checkpoint ({error})") from None
        culprit = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        raise CheckpointError(
            f"{path.name} contains pickled Python objects besides tensors"
            + (f" ({culprit[1]})" if culprit else "")
            + "; graphflow reads .ckpt files with weights_only=True and never runs pickle code from a file. "
            "Convert it to .safetensors with a tool you trust."
        ) from None
    except Exception as error:  # torch reports garbage as KeyError / RuntimeError with terse messages
        raise CheckpointError(f"{path.name} is neither a safetensors file nor a PyTorch checkpoint "
                              f"({type(error).__name__}: {error})") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]  # Lightning-style {"state_dict": ..., "global_step": ...}
    if not isinstance(loaded, dict):
        raise CheckpointError(f"{path.name} holds a {type(loaded).__name__}, not a dictionary of tensors")
    return {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor)}, {}


def take_prefix(state_dict: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def split_components(state_dict: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """The original-layout file split into its parts, prefixes removed. Keys outside the three parts
    (``model_ema.*`` copies, ``alphas_cumprod`` and the other training schedules) are not part of the model."""
    clip = take_prefix(state_dict, CLIP_PREFIX)
    clip = {k.removeprefix("text_model."): v for k, v in clip.items()}  # a few early files lack "text_model."
    return {
        "unet": take_prefix(state_dict, UNET_PREFIX),
        "vae": take_prefix(state_dict, VAE_PREFIX),
        "clip": clip,
        "openclip": take_prefix(state_dict, OPENCLIP_PREFIX),
    }


# ---------------------------------------------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------------------------------------------

FAMILY_BY_WIDTH = {768: "sd1", 1024: "sd2"}


def family_of(cross_attention_dim: int, openclip_text: bool) -> str:
    """768 → sd1, 1024 → sd2; other widths (test-size models) follow the text encoder: OpenCLIP → sd2."""
    return FAMILY_BY_WIDTH.get(cross_attention_dim) or ("sd2" if openclip_text else "sd1")


def detect(state_dict: dict[str, torch.Tensor]) -> Detected:
    """Family, inpainting and text-encoder layout of an original-layout state dict (shapes only: meta tensors do)."""
    if any(k.startswith("conditioner.embedders.") for k in state_dict):
        raise CheckpointError("this is an SDXL checkpoint; graphflow loads SD 1.x and SD 2.x checkpoints")
    unet = take_prefix(state_dict, UNET_PREFIX)
    if "input_blocks.0.0.weight" not in unet:
        if any(".down_blocks." in k or k.startswith("down_blocks.") for k in state_dict):
            raise CheckpointError("the keys are in diffusers layout; keep such weights in a diffusers folder with its configs")
        raise CheckpointError("no UNet weights (model.diffusion_model.*): not a Stable Diffusion checkpoint")
    widths = [tuple(v.shape)[1] for k, v in unet.items() if k.endswith("attn2.to_k.weight")]
    if not widths:
        raise CheckpointError("the UNet has no cross-attention layers: not a text-to-image Stable Diffusion model")
    parts = split_components(state_dict)
    text_layout = "openclip" if parts["openclip"] else "clip" if parts["clip"] else None
    return Detected(
        family=family_of(widths[0], text_layout == "openclip"),
        inpainting=tuple(unet["input_blocks.0.0.weight"].shape)[1] == 9,
        cross_attention_dim=widths[0],
        text_layout=text_layout,
    )


def guess_prediction_type(path: Path, family: str, metadata: dict[str, str]) -> str:
    """Whether an SD2 file predicts noise or velocity; the weights cannot tell. Rules, first match wins:
    a sidecar ``<name>.yaml`` (the original inference config: ``parameterization: "v"`` → v_prediction),
    the scheduler config graphflow stores in files it writes, then for sd2 the file name: the velocity
    models were published as ``768-v-ema`` / ``v2-1_768-ema-pruned``, so "768" or "v-pred"/"vpred" →
    v_prediction. Everything else is epsilon."""
    sidecar = Path(path).with_suffix(".yaml")
    if sidecar.is_file():
        import yaml

        try:
            params = (yaml.safe_load(sidecar.read_text()) or {}).get("model", {}).get("params", {})
            return "v_prediction" if params.get("parameterization") == "v" else "epsilon"
        except (yaml.YAMLError, AttributeError):
            pass  # an unreadable sidecar falls through to the other rules
    stored = json.loads(metadata.get(METADATA_PREFIX + "scheduler_config", "{}"))
    if stored.get("prediction_type") in ("epsilon", "v_prediction"):
        return stored["prediction_type"]
    if family == "sd2" and re.search(r"768|v-?pred", Path(path).stem.lower()):
        return "v_prediction"
    return "epsilon"


def config_folder(family: str, inpainting: bool, prediction_type: str) -> Path:
    """The shipped config folder for a family: sd1, sd1-inpainting, sd2 (2.1 768-v), sd2-base, sd2-inpainting."""
    if inpainting:
        return CONFIGS / f"{family}-inpainting"
    if family == "sd2" and prediction_type != "v_prediction":
        return CONFIGS / "sd2-base"
    return CONFIGS / family


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


# ---------------------------------------------------------------------------------------------------------------
# Configs from weight shapes
# ---------------------------------------------------------------------------------------------------------------

def indices(keys, prefix: str) -> list[int]:
    """Sorted distinct integers that follow ``prefix`` in ``keys`` (block / layer numbers)."""
    found = {k[len(prefix):].split(".", 1)[0] for k in keys if k.startswith(prefix)}
    return sorted(int(i) for i in found if i.isdigit())


def shape(state_dict: dict[str, torch.Tensor], key: str, component: str) -> tuple[int, ...]:
    if key not in state_dict:
        raise CheckpointError(f"{component} weight {key} is missing")
    return tuple(state_dict[key].shape)


def derive_unet_config(unet: dict[str, torch.Tensor]) -> dict[str, Any]:
    """UNet sizes from original-layout UNet weights: input blocks are conv_in, then per level
    ``layers_per_block`` (resnet[, attention]) blocks and a downsampler (none after the last level)."""
    n_input = len(indices(unet, "input_blocks."))
    levels = 1 + sum(1 for k in unet if re.fullmatch(r"input_blocks\.\d+\.0\.op\.weight", k))
    per_level = n_input // levels - 1
    if per_level < 1 or n_input != levels * (per_level + 1):
        raise CheckpointError(f"UNet input blocks ({n_input}) do not form {levels} levels of equal depth")
    first = [1 + level * (per_level + 1) for level in range(levels)]
    down_attention = [any(k.startswith(f"input_blocks.{i}.1.") for k in unet) for i in first]
    up_attention = [any(k.startswith(f"output_blocks.{level * (per_level + 1)}.1.") for k in unet) for level in range(levels)]
    config = {
        "in_channels": shape(unet, "input_blocks.0.0.weight", "UNet")[1],
        "out_channels": shape(unet, "out.2.weight", "UNet")[0],
        "block_out_channels": [shape(unet, f"input_blocks.{i}.0.out_layers.3.weight", "UNet")[0] for i in first],
        "layers_per_block": per_level,
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in down_attention],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in up_attention],
    }
    to_k = next((v for k, v in unet.items() if k.endswith("attn2.to_k.weight")), None)
    if to_k is not None:
        config["cross_attention_dim"] = tuple(to_k.shape)[1]
    proj_in = next((v for k, v in unet.items() if k.endswith("proj_in.weight")), None)
    if proj_in is not None:
        config["use_linear_projection"] = proj_in.dim() == 2  # SD2 uses Linear, SD1 a 1x1 conv
    return config


def derive_vae_config(vae: dict[str, torch.Tensor]) -> dict[str, Any]:
    """VAE sizes from original-layout VAE weights (``encoder.down.{level}.block.{j}``)."""
    levels = indices(vae, "encoder.down.")
    if not levels:
        raise CheckpointError("VAE weights (encoder.down.*) are missing")
    return {
        "in_channels": shape(vae, "encoder.conv_in.weight", "VAE")[1],
        "out_channels": shape(vae, "decoder.conv_out.weight", "VAE")[0],
        "latent_channels": shape(vae, "decoder.conv_in.weight", "VAE")[1],
        "block_out_channels": [shape(vae, f"encoder.down.{i}.block.0.conv1.weight", "VAE")[0] for i in levels],
        "layers_per_block": len(indices(vae, "encoder.down.0.block.")),
        "down_block_types": ["DownEncoderBlock2D"] * len(levels),
        "up_block_types": ["UpDecoderBlock2D"] * len(levels),
    }


def derive_text_config(text: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Text encoder sizes from weights already in transformers' CLIPTextModel layout."""
    vocab, hidden = shape(text, "embeddings.token_embedding.weight", "text encoder")
    return {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "max_position_embeddings": shape(text, "embeddings.position_embedding.weight", "text encoder")[0],
        "num_hidden_layers": len(indices(text, "encoder.layers.")),
        "intermediate_size": shape(text, "encoder.layers.0.mlp.fc1.weight", "text encoder")[0],
    }


def size_defaults(component: str, base: dict[str, Any], derived: dict[str, Any]) -> dict[str, Any]:
    """Attention head counts are invisible in the weights. Full-size models keep the shipped config's;
    other sizes get the SD rule: CLIP heads and SD2 UNet heads are 64 wide, SD1 UNets have 8 heads."""
    if component == "unet" and derived["block_out_channels"] != base["block_out_channels"]:
        if isinstance(base["attention_head_dim"], list):
            return {"attention_head_dim": [max(1, c // 64) for c in derived["block_out_channels"]]}
    if component == "text_encoder" and derived["hidden_size"] != base["hidden_size"]:
        return {"num_attention_heads": max(1, derived["hidden_size"] // 64)}
    return {}


def stored_config(metadata: dict[str, str], component: str) -> dict[str, Any]:
    """The full config graphflow wrote into a file's metadata (the values shapes cannot show)."""
    return json.loads(metadata.get(f"{METADATA_PREFIX}{component}_config", "{}"))


def assemble_config(component: str, base: dict[str, Any], derived: dict[str, Any], metadata: dict[str, str]) -> dict[str, Any]:
    """Shipped config < size-adapted head counts < config stored in the file < sizes read from the weights."""
    return {**base, **size_defaults(component, base, derived), **stored_config(metadata, component), **derived}


# ---------------------------------------------------------------------------------------------------------------
# Key conversions: tables of (diffusers prefix, original prefix, suffix renames), read in either direction
# ---------------------------------------------------------------------------------------------------------------

UNET_RESNET = {"norm1.": "in_layers.0.", "conv1.": "in_layers.2.", "time_emb_proj.": "emb_layers.1.",
               "norm2.": "out_layers.0.", "conv2.": "out_layers.3.", "conv_shortcut.": "skip_connection."}
VAE_RESNET = {"conv_shortcut.": "nin_shortcut."}
VAE_ATTENTION = {"group_norm.": "norm.", "to_q.": "q.", "to_k.": "k.", "to_v.": "v.", "to_out.0.": "proj_out."}
Rule = tuple[str, str, dict[str, str]]


def unet_rules(config: dict[str, Any]) -> list[Rule]:
    per_level, levels = config["layers_per_block"], len(config["block_out_channels"])
    rules: list[Rule] = [
        ("time_embedding.linear_1.", "time_embed.0.", {}), ("time_embedding.linear_2.", "time_embed.2.", {}),
        ("conv_in.", "input_blocks.0.0.", {}), ("conv_norm_out.", "out.0.", {}), ("conv_out.", "out.2.", {}),
        ("mid_block.resnets.0.", "middle_block.0.", UNET_RESNET), ("mid_block.attentions.0.", "middle_block.1.", {}),
        ("mid_block.resnets.1.", "middle_block.2.", UNET_RESNET),
    ]
    for level in range(levels):
        down_attention = config["down_block_types"][level].startswith("CrossAttn")
        for j in range(per_level):
            index = 1 + level * (per_level + 1) + j
            rules.append((f"down_blocks.{level}.resnets.{j}.", f"input_blocks.{index}.0.", UNET_RESNET))
            if down_attention:
                rules.append((f"down_blocks.{level}.attentions.{j}.", f"input_blocks.{index}.1.", {}))
        if level < levels - 1:
            index = 1 + level * (per_level + 1) + per_level
            rules.append((f"down_blocks.{level}.downsamplers.0.conv.", f"input_blocks.{index}.0.op.", {}))
        up_attention = config["up_block_types"][level].startswith("CrossAttn")
        for j in range(per_level + 1):
            index = level * (per_level + 1) + j
            rules.append((f"up_blocks.{level}.resnets.{j}.", f"output_blocks.{index}.0.", UNET_RESNET))
            if up_attention:
                rules.append((f"up_blocks.{level}.attentions.{j}.", f"output_blocks.{index}.1.", {}))
        if level < levels - 1:  # the upsampler follows the attention when the level has one
            index = level * (per_level + 1) + per_level
            rules.append((f"up_blocks.{level}.upsamplers.0.conv.", f"output_blocks.{index}.{2 if up_attention else 1}.conv.", {}))
    return rules


def vae_rules(config: dict[str, Any]) -> list[Rule]:
    levels, per_level = len(config["block_out_channels"]), config["layers_per_block"]
    rules: list[Rule] = []
    for part in ("encoder", "decoder"):
        rules += [
            (f"{part}.conv_norm_out.", f"{part}.norm_out.", {}),
            (f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1.", VAE_RESNET),
            (f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2.", VAE_RESNET),
            (f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1.", VAE_ATTENTION),
        ]
    for level in range(levels):
        up = levels - 1 - level  # the original decoder numbers its levels from the highest resolution
        rules += [(f"encoder.down_blocks.{level}.resnets.{j}.", f"encoder.down.{level}.block.{j}.", VAE_RESNET) for j in range(per_level)]
        rules += [(f"decoder.up_blocks.{level}.resnets.{j}.", f"decoder.up.{up}.block.{j}.", VAE_RESNET) for j in range(per_level + 1)]
        rules.append((f"encoder.down_blocks.{level}.downsamplers.0.conv.", f"encoder.down.{level}.downsample.conv.", {}))
        rules.append((f"decoder.up_blocks.{level}.upsamplers.0.conv.", f"decoder.up.{up}.upsample.conv.", {}))
    return rules


def swap_prefix(name: str, pairs) -> str:
    """``name`` with the first matching ``old`` prefix of ``pairs`` (old, new) replaced by ``new``."""
    for old, new in pairs:
        if name.startswith(old):
            return new + name[len(old):]
    return name


def rename(key: str, rules: list[Rule], to_original: bool) -> str:
    """Translate one key with the first rule whose prefix matches; keys no rule covers keep their name
    (so a strict load reports them by the name they have in the file)."""
    for diffusers_prefix, original_prefix, suffixes in rules:
        source, target = (diffusers_prefix, original_prefix) if to_original else (original_prefix, diffusers_prefix)
        if key.startswith(source):
            pairs = suffixes.items() if to_original else [(o, d) for d, o in suffixes.items()]
            return target + swap_prefix(key[len(source):], pairs)
    return key


def unet_to_original(weights: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    rules = unet_rules(config)
    return {rename(k, rules, True): v for k, v in weights.items()}


def unet_from_original(weights: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    rules = unet_rules(config)
    return {rename(k, rules, False): v for k, v in weights.items()}


VAE_ATTENTION_MATRIX = re.compile(r"(en|de)coder\.mid\.attn_1\.(q|k|v|proj_out)\.weight")


def vae_to_original(weights: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The original VAE attention uses 1x1 convolutions where diffusers uses Linear layers: same numbers, 4-D."""
    rules, out = vae_rules(config), {}
    for key, value in weights.items():
        key = rename(key, rules, True)
        out[key] = value[:, :, None, None] if VAE_ATTENTION_MATRIX.fullmatch(key) and value.dim() == 2 else value
    return out


def vae_from_original(weights: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    rules, out = vae_rules(config), {}
    for key, value in weights.items():
        if key.startswith(("loss.", "model_ema.")):  # training-only parts of some VAE files
            continue
        matrix = VAE_ATTENTION_MATRIX.fullmatch(key) and value.dim() == 4
        out[rename(key, rules, False)] = value[:, :, 0, 0] if matrix else value
    return out


def clip_from_original(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SD1's OpenAI CLIP is stored with transformers' own names; transformers 5 just has no ``text_model.``
    level (``split_components`` removed it). ``position_ids`` is a constant buffer older versions saved."""
    return {k: v for k, v in weights.items() if k != "embeddings.position_ids"}


OPENCLIP_NAMES = [  # (transformers name, OpenCLIP name) inside one transformer layer
    ("layer_norm1.", "ln_1."), ("layer_norm2.", "ln_2."), ("mlp.fc1.", "mlp.c_fc."), ("mlp.fc2.", "mlp.c_proj."),
    ("self_attn.out_proj.", "attn.out_proj."),
]
OPENCLIP_TOP = [("embeddings.token_embedding.weight", "token_embedding.weight"),
                ("embeddings.position_embedding.weight", "positional_embedding"),
                ("final_layer_norm.weight", "ln_final.weight"), ("final_layer_norm.bias", "ln_final.bias")]


def openclip_from_original(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SD2's OpenCLIP ViT-H text tower → CLIPTextModel. SD2 conditions on the penultimate layer, so the last
    block (and the unused ``text_projection`` / ``logit_scale``) is not part of the text encoder."""
    blocks = indices(weights, "transformer.resblocks.")
    last = blocks[-1] if blocks else -1
    out: dict[str, torch.Tensor] = {}
    for key, value in weights.items():
        if key in ("text_projection", "logit_scale", "attn_mask") or key.startswith(f"transformer.resblocks.{last}."):
            continue
        match = re.fullmatch(r"transformer\.resblocks\.(\d+)\.(.+)", key)
        if not match:
            out[dict((o, d) for d, o in OPENCLIP_TOP).get(key, key)] = value
            continue
        layer, rest = f"encoder.layers.{match[1]}.", match[2]
        if rest.startswith("attn.in_proj_"):  # q, k and v stacked in one tensor
            kind = rest.removeprefix("attn.in_proj_")
            for name, part in zip("qkv", value.chunk(3, dim=0)):
                out[f"{layer}self_attn.{name}_proj.{kind}"] = part
            continue
        out[layer + swap_prefix(rest, [(oc, hf) for hf, oc in OPENCLIP_NAMES])] = value
    return out


def openclip_to_original(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`openclip_from_original`. The dropped final block is written as an exact identity
    (all-zero weights: both residual branches add zero), so tools that take the penultimate layer of a
    full tower get the same conditioning graphflow computes."""
    top = dict(OPENCLIP_TOP)
    out: dict[str, torch.Tensor] = {}
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
    if layers:
        template, identity = f"transformer.resblocks.{layers[0]}.", f"transformer.resblocks.{layers[-1] + 1}."
        for key in [k for k in out if k.startswith(template)]:
            out[identity + key[len(template):]] = torch.zeros_like(out[key])
    return out


# ---------------------------------------------------------------------------------------------------------------
# Building modules
# ---------------------------------------------------------------------------------------------------------------

def describe(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" … ({len(keys)} in all)" if len(keys) > limit else "")


def load_exact(module: torch.nn.Module, weights: dict[str, torch.Tensor], component: str) -> torch.nn.Module:
    """Put ``weights`` into a module built on the meta device, refusing any missing, unexpected or misshapen
    tensor. ``assign=True`` makes the file's tensors the parameters: no copy is made."""
    expected = set(module.state_dict())
    missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or unexpected:
        problems = ([f"missing {describe(missing)}"] if missing else []) + ([f"unexpected {describe(unexpected)}"] if unexpected else [])
        raise CheckpointError(f"{component} weights do not match its architecture: " + "; ".join(problems))
    try:
        module.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as error:
        detail = " ".join(str(error).split()).split(": ", 1)[-1]  # torch's multi-line report, on one line
        raise CheckpointError(f"{component} weights do not match its architecture: {detail}") from None
    return module.eval()


def build_unet(config: dict[str, Any], weights: dict[str, torch.Tensor]) -> torch.nn.Module:
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(config)
    return load_exact(unet, weights, "UNet")


def build_vae(config: dict[str, Any], weights: dict[str, torch.Tensor]) -> torch.nn.Module:
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL

    with init_empty_weights():
        vae = AutoencoderKL.from_config(config)
    return load_exact(vae, weights, "VAE")


def build_text_encoder(config: dict[str, Any], weights: dict[str, torch.Tensor]) -> torch.nn.Module:
    from accelerate import init_empty_weights
    from transformers import CLIPTextConfig, CLIPTextModel

    with init_empty_weights():  # buffers (position_ids) stay real: only parameters are left empty
        model = CLIPTextModel(CLIPTextConfig.from_dict(config))
    return load_exact(model, weights, "text encoder")


def cast(module: torch.nn.Module, dtype: torch.dtype | None) -> torch.nn.Module:
    return module if dtype is None else module.to(dtype=dtype)


# ---------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------

def load_single_file(path: Path, prediction_type: str = "auto", dtype: torch.dtype | None = None) -> Components:
    """Build UNet, VAE, text encoder, tokenizer and scheduler config from one original-layout file, offline."""
    state_dict, metadata = read_state_dict(path)
    detected = detect(state_dict)
    if detected.text_layout is None:
        raise CheckpointError("the file has no text encoder (cond_stage_model.*); it is not a full checkpoint")
    parts = split_components(state_dict)
    if not parts["vae"]:
        raise CheckpointError("the file has no VAE (first_stage_model.*); it is not a full checkpoint")
    if prediction_type == "auto":
        prediction_type = guess_prediction_type(path, detected.family, metadata)
    base = config_folder(detected.family, detected.inpainting, prediction_type)

    def config(component: str, derived: dict[str, Any]) -> dict[str, Any]:
        return assemble_config(component, read_json(base / component / "config.json"), derived, metadata)

    if detected.text_layout == "openclip":
        text_weights = openclip_from_original(parts["openclip"])
    else:
        text_weights = clip_from_original(parts["clip"])
    unet_config = config("unet", derive_unet_config(parts["unet"]))
    vae_config = config("vae", derive_vae_config(parts["vae"]))
    text_config = config("text_encoder", derive_text_config(text_weights))
    if unet_config["cross_attention_dim"] != text_config["hidden_size"]:
        raise CheckpointError(f"the UNet attends to {unet_config['cross_attention_dim']}-wide text features but the text "
                              f"encoder produces {text_config['hidden_size']}-wide ones: the parts do not belong together")
    scheduler_config = {**read_json(base / "scheduler" / "scheduler_config.json"),
                        **stored_config(metadata, "scheduler"), "prediction_type": prediction_type}
    pad_token = read_json(base / "tokenizer" / "tokenizer_config.json")["pad_token"]

    return Components(
        unet=cast(build_unet(unet_config, unet_from_original(parts["unet"], unet_config)), dtype),
        vae=cast(build_vae(vae_config, vae_from_original(parts["vae"], vae_config)), dtype),
        text_encoder=cast(build_text_encoder(text_config, text_weights), dtype),
        tokenizer=clip_tokenizer(pad_token),
        scheduler_config=scheduler_config,
        family=detected.family,
        prediction_type=prediction_type,
    )


def checked(result: tuple[Any, dict[str, list]], component: str) -> Any:
    """``from_pretrained(..., output_loading_info=True)`` result → the model, or an error if any weight was
    missing or unexpected (both libraries would otherwise warn and continue with random weights)."""
    model, info = result
    problems = {kind: list(info.get(kind) or []) for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if any(problems.values()):
        detail = "; ".join(f"{kind.replace('_', ' ')}: {describe([str(k) for k in keys])}" for kind, keys in problems.items() if keys)
        raise CheckpointError(f"{component} weights do not match its config: {detail}")
    return model.eval()


def load_diffusers_vae(folder: Path, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """An AutoencoderKL folder (config.json + weights)."""
    from diffusers import AutoencoderKL

    try:
        result = AutoencoderKL.from_pretrained(folder, torch_dtype=dtype, local_files_only=True, output_loading_info=True)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"cannot load the VAE folder {Path(folder).name}: {error}") from None
    return checked(result, "VAE")


def load_diffusers_folder(folder: Path, prediction_type: str = "auto", dtype: torch.dtype | None = None) -> Components:
    """A diffusers StableDiffusionPipeline folder; its own configs describe the model (the tiny model too)."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    try:
        unet = checked(UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=dtype, local_files_only=True,
                                                           output_loading_info=True), "UNet")
        text_encoder = checked(CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", dtype=dtype, local_files_only=True,
                                                             output_loading_info=True), "text encoder")
        tokenizer_dir = folder / "tokenizer"
        if any((tokenizer_dir / f).exists() for f in ("tokenizer.json", "vocab.json")):
            tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
        else:  # vocabulary not shipped with the folder: the real CLIP BPE is the same for SD1 and SD2
            tokenizer = clip_tokenizer(read_json(tokenizer_dir / "tokenizer_config.json").get("pad_token", "<|endoftext|>"))
        scheduler_config = read_json(folder / "scheduler" / "scheduler_config.json")
    except (OSError, ValueError) as error:
        raise CheckpointError(f"cannot load the diffusers folder {folder.name}: {error}") from None
    vae = load_diffusers_vae(folder / "vae", dtype)
    if prediction_type == "auto":
        prediction_type = scheduler_config.get("prediction_type", "epsilon")
    openclip = text_encoder.config.hidden_act == "gelu"  # OpenCLIP uses exact GELU, OpenAI CLIP quick_gelu
    return Components(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
        scheduler_config={**scheduler_config, "prediction_type": prediction_type},
        family=family_of(int(unet.config.cross_attention_dim), openclip),
        prediction_type=prediction_type,
    )


def load_vae_file(path: Path, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """A VAE single file: a whole checkpoint's ``first_stage_model.*`` or bare VAE keys (``encoder.*``,
    ``decoder.*``, ``quant_conv.*`` as in vae-ft-mse-840000-ema-pruned)."""
    state_dict, _ = read_state_dict(path)
    for prefix in (VAE_PREFIX, "vae."):
        if any(k.startswith(prefix) for k in state_dict):
            state_dict = take_prefix(state_dict, prefix)
            break
    if "encoder.conv_in.weight" not in state_dict:
        if any(k.startswith("encoder.down_blocks.") for k in state_dict):
            raise CheckpointError("the VAE keys are in diffusers layout; keep such a VAE in a folder with its config.json")
        raise CheckpointError("no VAE weights (encoder.conv_in.weight) in the file: not a VAE")
    weights = {k: v for k, v in state_dict.items() if k.startswith(("encoder.", "decoder.", "quant_conv.", "post_quant_conv."))}
    config = {**read_json(CONFIGS / "sd1" / "vae" / "config.json"), **derive_vae_config(weights)}
    return cast(build_vae(config, vae_from_original(weights, config)), dtype)


# ---------------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------------

def public_config(config: Any) -> dict[str, Any]:
    """A module config without the bookkeeping keys (class name, library versions)."""
    return {k: v for k, v in dict(config).items() if not k.startswith("_") and k not in ("transformers_version", "dtype", "torch_dtype")}


def original_state_dict(model, clip, vae) -> dict[str, torch.Tensor]:
    """The three parts in the original single-file layout (tensors still where they live)."""
    unet_config = dict(model.unet.config)
    weights = {UNET_PREFIX + k: v for k, v in unet_to_original(model.unet.state_dict(), unet_config).items()}
    weights.update({VAE_PREFIX + k: v for k, v in vae_to_original(vae.vae.state_dict(), dict(vae.vae.config)).items()})
    text = clip.text_encoder.state_dict()
    if clip.family == "sd2":
        weights.update({OPENCLIP_PREFIX + k: v for k, v in openclip_to_original(text).items()})
    else:
        weights.update({CLIP_PREFIX + "text_model." + k: v for k, v in text.items()})
    return weights


def save_single_file(model, clip, vae, path: Path) -> Path:
    """Write MODEL + CLIP + VAE as one original-layout ``.safetensors`` (written atomically). The diffusers /
    transformers configs go into the metadata, so graphflow restores exactly what shapes cannot show (attention
    head counts, scheduler); other tools ignore it."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in original_state_dict(model, clip, vae).items()}
    metadata = {
        "format": "pt",
        METADATA_PREFIX + "family": model.family,
        METADATA_PREFIX + "unet_config": json.dumps(public_config(model.unet.config)),
        METADATA_PREFIX + "vae_config": json.dumps(public_config(vae.vae.config)),
        METADATA_PREFIX + "text_encoder_config": json.dumps(public_config(clip.text_encoder.config.to_dict())),
        METADATA_PREFIX + "scheduler_config": json.dumps({**public_config(model.scheduler_config), "prediction_type": model.prediction_type}),
    }
    temporary = path.with_name(path.name + ".partial")
    save_file(tensors, str(temporary), metadata=metadata)
    os.replace(temporary, path)
    return path
