"""LoRA: low-rank weight updates from ``<models_dir>/loras`` merged into new UNet / text-encoder modules.

Files are looked up in ``<models_dir>/loras`` first, then in ``loras/`` of each read-only asset folder
(``Settings.asset_dirs``, see ``nodes/search.py``).

File formats (``.safetensors`` only):
- Kohya / A1111: ``lora_unet_<module>`` and ``lora_te_<module>`` (``lora_te1_`` too; SDXL's second text encoder
  ``lora_te2_``) with
  ``.lora_down.weight``, ``.lora_up.weight`` and optionally ``.alpha``; ``<module>`` is either the diffusers
  module path with ``_`` for ``.`` (``lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q``)
  or the original LDM one (``lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q``);
- diffusers / peft: ``unet.<module>.lora_A.weight`` / ``.lora_B.weight`` (``text_encoder.`` for the text
  encoder, ``text_encoder_2.`` for SDXL's second), or the older ``.lora.down.weight`` / ``.to_q_lora.down.weight`` spellings; alpha from
  ``<module>.alpha`` keys or from diffusers' ``lora_adapter_metadata`` (``unet.lora_alpha``).
Key names are translated with diffusers' own conversion code (``lora_state_dict`` for Kohya files,
``convert_unet_state_dict_to_peft`` / ``convert_state_dict_to_peft``), then matched to modules; a key that
matches no module is an error, never skipped.

Each adapted weight becomes ``W + strength · alpha/rank · (up @ down)`` (no alpha: ``alpha = rank``),
computed in float32 and stored in W's dtype. The result is a NEW module built by
:func:`nodes.patching.clone_with_weights`: only the patched weights are new tensors, everything else is
shared with the input, which stays exactly as it was. Strength 0 returns the input unchanged.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping

import torch
from pydantic import Field

from graphflow.context import RunContext
from graphflow.errors import InvalidArgument, NodeInputError
from graphflow.node import Input, node

from .patching import clone_with_weights
from .search import MissingFile, file_fingerprint, find_file, preflight_check, search_folders
from .values import CLIP, MODEL, Clip, Model

LORAS_SUBDIR = "loras"
TARGETS = ("unet", "text_encoder", "text_encoder_2")  # text_encoder_2: SDXL's second (OpenCLIP bigG) encoder
_KOHYA_PARTS = ("lora_down.weight", "lora_up.weight", "alpha")


@dataclass(frozen=True)
class LoraModule:
    """One adapted layer: ``up @ down`` scaled by ``alpha / rank``. ``source`` is the file's key, for errors."""

    down: torch.Tensor
    up: torch.Tensor
    alpha: float | None
    source: str

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def scale(self) -> float:
        return 1.0 if self.alpha is None else self.alpha / self.rank


# ---------------------------------------------------------------------------------------------------
# Reading and naming
# ---------------------------------------------------------------------------------------------------


def read_lora_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and the safetensors header metadata of a LoRA file."""
    from safetensors import safe_open

    tensors = {}
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        metadata = handle.metadata() or {}
        for key in handle.keys():
            tensors[key] = handle.get_tensor(key)
    return tensors, metadata


def parse_lora(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None,
               unet_config=None) -> dict[str, dict[str, LoraModule]]:
    """Group a LoRA state dict by target (``unet`` / ``text_encoder``) and diffusers module path.

    ``unet_config`` lets diffusers map LDM block numbers (``input_blocks_4_1``) to diffusers blocks."""
    if not tensors:
        raise InvalidArgument("tensors", "the file holds no tensors")
    if all(key.startswith(("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")) for key in tensors):
        peft = _kohya_to_peft(tensors, unet_config)
    else:
        peft = _diffusers_to_peft(tensors)
    return _group_peft(peft, _metadata_alphas(metadata or {}))


def _kohya_to_peft(tensors: Mapping[str, torch.Tensor], unet_config) -> dict[str, tuple[torch.Tensor | float, str]]:
    """Kohya keys → ``<target>.<module>.lora_A.weight`` / ``lora_B.weight`` / ``alpha`` (value, original key)."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin

    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        lora_name, _, part = key.partition(".")
        if part not in _KOHYA_PARTS:
            raise InvalidArgument("tensors", f"{key}: unsupported LoRA key (LoHa/LoKr/DoRA and other LyCORIS types are not "
                             f"supported; expected {', '.join(_KOHYA_PARTS)})")
        groups.setdefault(lora_name, {})[part] = tensor
    converted: dict[str, tuple[torch.Tensor | float, str]] = {}
    for lora_name, parts in groups.items():
        if "lora_down.weight" not in parts or "lora_up.weight" not in parts:
            raise InvalidArgument("tensors", f"{lora_name}: needs both lora_down.weight and lora_up.weight")
        one = {f"{lora_name}.lora_down.weight": parts["lora_down.weight"],
               f"{lora_name}.lora_up.weight": parts["lora_up.weight"]}
        # diffusers' own Kohya → diffusers translation, one layer at a time so alphas stay attached
        try:
            translated, _ = StableDiffusionLoraLoaderMixin.lora_state_dict(one, unet_config=unet_config)
        except ValueError as exc:  # diffusers refuses a layer it cannot map
            raise InvalidArgument("tensors", f"{lora_name}: {exc}") from exc
        peft = _to_peft_names(translated)
        for key, value in peft.items():
            converted[key] = (value, lora_name)
        module = _module_of(next(iter(peft)))
        if "alpha" in parts:
            converted[f"{module}.alpha"] = (float(parts["alpha"].item()), lora_name)
    return converted


def _diffusers_to_peft(tensors: Mapping[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor | float, str]]:
    converted: dict[str, tuple[torch.Tensor | float, str]] = {}
    for key, value in tensors.items():
        prefix = key.split(".", 1)[0]
        full = key if prefix in TARGETS else f"unet.{key}"  # diffusers files without a prefix are UNet-only
        (new_key, new_value), = _to_peft_names({full: value}).items()
        converted[new_key] = (float(new_value.item()) if new_key.endswith(".alpha") else new_value, key)
    return converted


def _to_peft_names(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers' older LoRA spellings (``to_q_lora.down``, ``lora.down``, ``lora_linear_layer``) → peft's."""
    from diffusers.utils.state_dict_utils import (StateDictType, convert_state_dict_to_peft,
                                                  convert_unet_state_dict_to_peft)

    unet = {k: v for k, v in state.items() if k.startswith("unet.")}
    text = {k: v for k, v in state.items() if not k.startswith("unet.")}
    out = dict(convert_unet_state_dict_to_peft(unet)) if unet else {}
    if text:
        out.update(convert_state_dict_to_peft(text, original_type=StateDictType.DIFFUSERS_OLD))
    return out


def _module_of(peft_key: str) -> str:
    for suffix in (".lora_A.weight", ".lora_B.weight", ".alpha"):
        if peft_key.endswith(suffix):
            return peft_key[: -len(suffix)]
    raise InvalidArgument("tensors", f"{peft_key}: not a LoRA weight (expected lora_A/lora_B weights or alpha)")


def _metadata_alphas(metadata: Mapping[str, str]) -> dict[str, float]:
    """Per-target default alpha from diffusers' ``lora_adapter_metadata`` header (``{"unet.lora_alpha": 8}``)."""
    raw = metadata.get("lora_adapter_metadata")
    if not raw:
        return {}
    config = json.loads(raw)
    for target in TARGETS:
        if config.get(f"{target}.alpha_pattern") or config.get(f"{target}.rank_pattern"):
            # per-layer patterns would need peft's pattern matching; a wrong scale must not pass silently
            raise InvalidArgument("metadata", f"per-layer alpha/rank patterns in lora_adapter_metadata ({target}) are not supported")
    return {t: float(config[f"{t}.lora_alpha"]) for t in TARGETS if f"{t}.lora_alpha" in config}


def _group_peft(peft: Mapping[str, tuple[torch.Tensor | float, str]], default_alpha: Mapping[str, float]):
    parts: dict[str, dict[str, tuple]] = {}
    for key, (value, source) in peft.items():
        module = _module_of(key)
        parts.setdefault(module, {})[key[len(module) + 1:]] = (value, source)
    grouped: dict[str, dict[str, LoraModule]] = {t: {} for t in TARGETS}
    for module, found in parts.items():
        if "lora_A.weight" not in found or "lora_B.weight" not in found:
            source = next(iter(found.values()))[1]
            raise InvalidArgument("tensors", f"{source}: needs both down (lora_A) and up (lora_B) weights")
        target, _, path = module.partition(".")
        if target not in TARGETS:
            raise InvalidArgument("tensors", f"{found['lora_A.weight'][1]}: unknown LoRA target {target!r} (expected unet, text_encoder or text_encoder_2)")
        alpha = found["alpha"][0] if "alpha" in found else default_alpha.get(target)
        down, source = found["lora_A.weight"]
        grouped[target][path] = LoraModule(down, found["lora_B.weight"][0], alpha, source)
    return grouped


# ---------------------------------------------------------------------------------------------------
# Applying
# ---------------------------------------------------------------------------------------------------


def resolve_modules(module: torch.nn.Module, loras: Mapping[str, LoraModule]) -> dict[str, list[LoraModule]]:
    """Parameter name (``<module path>.weight``) → LoRA layers that adapt it. Unmatched layers raise."""
    has_text_model = hasattr(module, "text_model")
    resolved: dict[str, list[LoraModule]] = {}
    unmatched = []
    for path, lora in loras.items():
        if not has_text_model and path.startswith("text_model."):
            path = path[len("text_model."):]  # transformers ≥ 5 CLIPTextModel has no text_model level
        try:
            layer = module.get_submodule(path)
        except AttributeError:
            layer = None
        if layer is None or not isinstance(getattr(layer, "weight", None), torch.Tensor):
            unmatched.append(f"{lora.source} → {path}")
            continue
        resolved.setdefault(f"{path}.weight", []).append(lora)
    if unmatched:
        raise InvalidArgument("module", f"{len(unmatched)} LoRA layer(s) match no layer of this {type(module).__name__}, "
                         f"first: {unmatched[0]}")
    return resolved


def lora_delta(lora: LoraModule, weight_shape: torch.Size, device: torch.device | str = "cpu") -> torch.Tensor:
    """``up @ down`` (float32, on ``device``) shaped like the weight: linear (out, in) or conv (out, in, kh, kw)."""
    if lora.up.ndim == 4 and lora.up.shape[2:] != (1, 1):
        raise InvalidArgument("lora", f"{lora.source}: up weights with a {tuple(lora.up.shape[2:])} kernel are not supported")
    if lora.up.shape[1] != lora.down.shape[0]:
        raise InvalidArgument("lora", f"{lora.source}: up {tuple(lora.up.shape)} and down {tuple(lora.down.shape)} ranks differ")
    delta = lora.up.flatten(1).to(device, torch.float32) @ lora.down.flatten(1).to(device, torch.float32)  # (out, in·kh·kw)
    if delta.numel() != weight_shape.numel() or delta.shape[0] != weight_shape[0]:
        raise InvalidArgument("lora", f"{lora.source}: gives a {tuple(delta.shape)} update for a weight of shape {tuple(weight_shape)}")
    return delta.reshape(weight_shape)


def apply_lora(module: torch.nn.Module, loras: Mapping[str, LoraModule], strength: float) -> torch.nn.Module:
    """A new module with the LoRA merged in at ``strength``; ``module`` itself is left untouched."""
    resolved = resolve_modules(module, loras)
    if strength == 0 or not resolved:
        return module
    new_weights = {}
    for name, layers in resolved.items():
        weight = module.get_parameter(name)
        merged = weight.detach().float()
        for lora in layers:
            merged = merged + (strength * lora.scale) * lora_delta(lora, weight.shape, merged.device)
        new_weights[name] = merged.to(weight.dtype)
    return clone_with_weights(module, new_weights)


# ---------------------------------------------------------------------------------------------------
# The node
# ---------------------------------------------------------------------------------------------------


def lora_folders(settings) -> list[Path]:
    """``<models_dir>/loras``, then ``loras/`` in every asset folder (see nodes/search.py)."""
    return search_folders(settings, LORAS_SUBDIR)


def list_loras(folders: list[Path]) -> list[str]:
    """LoRA names (paths relative to their loras folder, without .safetensors) in all folders, sorted."""
    names = set()
    for folder in folders:
        if folder.is_dir():
            names.update(p.relative_to(folder).with_suffix("").as_posix() for p in folder.rglob("*.safetensors"))
    return sorted(names)


def find_lora(folders: list[Path], name: str) -> Path:
    """The file for a LoRA name, from the first folder that has it; names cannot leave a loras folder."""
    relative = name if name.endswith(".safetensors") else f"{name}.safetensors"
    path = find_file(folders, [relative], "name")
    if path is None:
        where = ", ".join(str(f) for f in folders)
        raise MissingFile("name", f"no LoRA named {name!r} (looked in {where})",
                          list_loras(folders) or f"a .safetensors file in {folders[0]}", name)
    return path


def _preflight(literals: dict, settings) -> list:
    folders = lora_folders(settings)
    return preflight_check(lambda: find_lora(folders, literals["name"]), lambda: list_loras(folders))


def _fingerprint(literals: dict, settings) -> str:
    return file_fingerprint(find_lora(lora_folders(settings), literals.get("name", "")))


@node(outputs={"model": MODEL, "clip": CLIP}, category="loaders", fingerprint=_fingerprint, pool="model",
      preflight=_preflight)
def LoraLoader(
    model: Model = Input(MODEL),
    clip: Clip = Input(CLIP),
    name: str = Field(..., description="LoRA file in <models_dir>/loras or an asset folder's loras/ "
                      "(with or without .safetensors; may name sub-folders)"),
    strength_model: float = Field(1.0, ge=-10.0, le=10.0, description="multiplier of the UNet update (0 = off)"),
    strength_clip: float = Field(1.0, ge=-10.0, le=10.0, description="multiplier of the text-encoder update (0 = off)"),
    *,
    ctx: RunContext,
) -> tuple[Model, Clip]:
    """Apply a LoRA (Kohya/A1111 or diffusers/peft format) to a model and its text encoder.

    Returns new MODEL and CLIP values with the update merged into their weights; chain several
    LoraLoaders for a stack, each with its own strengths. The inputs stay untouched."""
    return apply_lora_file(model, clip, name, strength_model, strength_clip, ctx.settings)


def apply_lora_file(model: Model, clip: Clip | None, name: str, strength_model: float, strength_clip: float,
                    settings) -> tuple[Model, Clip | None]:
    """The LoRA file ``name`` applied to ``model`` and, unless it is None, ``clip`` (errors name the input "name")."""
    path = find_lora(lora_folders(settings), name)
    try:
        tensors, metadata = read_lora_file(path)
    except Exception as exc:  # safetensors raises its own error type for a damaged or foreign file
        raise NodeInputError("name", f"{path.name} is not a readable .safetensors file: {exc}",
                             "a LoRA .safetensors file", name) from exc
    try:
        loras = parse_lora(tensors, metadata, unet_config=model.unet.config)
        unet = apply_lora(model.unet, loras["unet"], strength_model)
        text_encoder = None if clip is None else apply_lora(clip.text_encoder, loras["text_encoder"], strength_clip)
        text_encoder_2 = None if clip is None else clip.text_encoder_2
        if loras["text_encoder_2"] and clip is not None:
            if text_encoder_2 is None:
                raise InvalidArgument("tensors", "the LoRA adapts a second text encoder (lora_te2_, SDXL) but this CLIP "
                                      "has one text encoder")
            text_encoder_2 = apply_lora(text_encoder_2, loras["text_encoder_2"], strength_clip)
    except InvalidArgument as exc:  # whatever the helpers found wrong is wrong with the file this input names
        raise NodeInputError("name", f"{path.name}: {exc.message}", "a LoRA for this model", name) from exc
    label = Path(name).with_suffix("").as_posix() if name.endswith(".safetensors") else name
    if unet is not model.unet:
        model = replace(model, unet=unet, patches=model.patches + (f"lora:{label}:{strength_model:g}",))
    if clip is not None and (text_encoder is not clip.text_encoder or text_encoder_2 is not clip.text_encoder_2):
        clip = replace(clip, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                       patches=clip.patches + (f"lora:{label}:{strength_clip:g}",))
    return model, clip
