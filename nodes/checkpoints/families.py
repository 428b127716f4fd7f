"""The model families graphflow loads, as data, and the detection that reads a file's family from its weights.

A family is a record: its cross-attention width at full size, where its text encoder sits in a single file and in
which layout, and the shipped config folders of its variants (prediction type, inpainting). Adding a family is
adding a record (and its config folders); the detection and loading code reads only these records.

Detection: a UNet with SDXL's added embedding (``label_emb``) is SDXL — base (CLIP-L and OpenCLIP bigG under
``conditioner.embedders.0/1``) or refiner (bigG alone, under ``conditioner.embedders.0``); otherwise the UNet's
cross-attention width picks the family (768 → SD 1.x, 1024 → SD 2.x; other widths, test-size models, follow the
text encoder's layout). A 9-channel UNet input is the family's inpainting variant."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .common import CONFIGS, METADATA_PREFIX, CheckpointError, Detected, take_prefix
from .text import CLIP, OPENCLIP, OPENCLIP_G, TextLayout
from .unet import INPAINTING_IN_CHANNELS, UNET_PREFIX, cross_attention_widths
from .vae import VAE_PREFIX

CLIP_PREFIX = "cond_stage_model.transformer."  # followed by "text_model." in every current file
OPENCLIP_PREFIX = "cond_stage_model.model."


@dataclass(frozen=True)
class Family:
    name: str  # the ``family`` of MODEL and CLIP values
    title: str  # how messages name it
    cross_attention_dim: int  # the width of the text features its UNet attends to, at full size
    text_prefix: str  # where a single file keeps its text encoder...
    text: TextLayout  # ...and in which layout
    configs: dict[str, str]  # prediction type → shipped config folder (nodes/models/configs/<folder>)
    inpainting_config: str | None  # the config folder of the 9-channel inpainting variant (None: there is none)
    v_prediction_stem: str | None = None  # a file name matching this is a velocity model (the weights cannot tell)
    text_2: tuple[str, TextLayout] | None = None  # SDXL base: the second text encoder's prefix and layout
    added_conditioning: bool = False  # SDXL: the UNet embeds pooled text and size ids (label_emb.*)...
    size_ids: int = 0  # ...this many: 6 for the base (sizes, crop, target), 5 for the refiner (aesthetic score)

    @property
    def encoders(self) -> tuple[tuple[str, TextLayout], ...]:
        """(prefix, layout) of each text encoder in a single file, in the order their features are joined."""
        return ((self.text_prefix, self.text),) + ((self.text_2,) if self.text_2 else ())


SD1 = Family("sd1", "SD 1.x", 768, CLIP_PREFIX, CLIP, {"epsilon": "sd1", "v_prediction": "sd1"}, "sd1-inpainting")
# SD 2.x's velocity models were published as 768-v-ema / v2-1_768-ema-pruned; the 512 "base" ones predict noise.
SD2 = Family("sd2", "SD 2.x", 1024, OPENCLIP_PREFIX, OPENCLIP, {"epsilon": "sd2-base", "v_prediction": "sd2"},
             "sd2-inpainting", v_prediction_stem=r"768|v-?pred")
SDXL = Family("sdxl", "SDXL base", 2048, "conditioner.embedders.0.transformer.", CLIP,
              {"epsilon": "sdxl", "v_prediction": "sdxl"}, "sdxl-inpainting",
              text_2=("conditioner.embedders.1.model.", OPENCLIP_G), added_conditioning=True, size_ids=6)
SDXL_REFINER = Family("sdxl-refiner", "SDXL refiner", 1280, "conditioner.embedders.0.model.", OPENCLIP_G,
                      {"epsilon": "sdxl-refiner", "v_prediction": "sdxl-refiner"}, None, added_conditioning=True,
                      size_ids=5)
FAMILIES = (SD1, SD2, SDXL, SDXL_REFINER)


def loadable_titles() -> str:
    """The families, as messages name them: "SD 1.x, SD 2.x, SDXL base or SDXL refiner"."""
    titles = [f.title for f in FAMILIES]
    return ", ".join(titles[:-1]) + " or " + titles[-1] if len(titles) > 1 else titles[0]


def family_named(name: str) -> Family:
    for family in FAMILIES:
        if family.name == name:
            return family
    raise CheckpointError(f"unknown model family {name!r}; expected one of {', '.join(f.name for f in FAMILIES)}")


def family_of(cross_attention_dim: int, text_layout: str | None) -> str:
    """The single-encoder family with this cross-attention width; for other widths (test-size models) the one whose
    text encoder has this layout; else the first family."""
    plain = [f for f in FAMILIES if not f.added_conditioning]
    for family in plain:
        if family.cross_attention_dim == cross_attention_dim:
            return family.name
    return next((f.name for f in plain if f.text.name == text_layout), FAMILIES[0].name)


def text_layout_named(name: str) -> TextLayout:
    return next(layout for f in FAMILIES for _, layout in f.encoders if layout.name == name)


def text_layout_of(hidden_act: str) -> str | None:
    """The layout of a transformers text encoder, told by its activation (OpenCLIP: exact GELU, OpenAI CLIP: quick_gelu)."""
    return next((f.text.name for f in FAMILIES if f.text.hidden_act == hidden_act), None)


def split_components(state_dict: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """The original-layout file split into UNet, VAE and the single-encoder families' text encoders (keyed by layout
    name), prefixes removed (SDXL's encoders: :func:`text_parts`). Keys outside these parts (``model_ema.*``
    copies, ``alphas_cumprod`` and the other training schedules) are not part of the model."""
    parts = {"unet": take_prefix(state_dict, UNET_PREFIX), "vae": take_prefix(state_dict, VAE_PREFIX)}
    for family in FAMILIES:
        if not family.added_conditioning:
            parts[family.text.name] = take_prefix(state_dict, family.text_prefix)
    return parts


def text_parts(state_dict: dict[str, torch.Tensor], family: Family) -> list[dict[str, torch.Tensor]]:
    """Each of a family's text encoders in a single file, prefix removed (empty where the file has none)."""
    return [take_prefix(state_dict, prefix) for prefix, _ in family.encoders]


def text_subfolders(family: Family) -> list[str]:
    """The diffusers names of a family's text encoders, as in its config folder (and the metadata graphflow writes):
    SDXL base has text_encoder and text_encoder_2, the refiner's only one is text_encoder_2."""
    if family.text_2:
        return ["text_encoder", "text_encoder_2"]
    return ["text_encoder_2" if family.added_conditioning else "text_encoder"]


def has_prefix(state_dict: dict[str, Any], prefix: str) -> bool:
    return any(k.startswith(prefix) for k in state_dict)


def detect(state_dict: dict[str, torch.Tensor]) -> Detected:
    """Family, inpainting and text-encoder layout of an original-layout state dict (shapes only: meta tensors do).

    SDXL is told by its UNet's added embedding (``label_emb``): base and refiner by their text encoders' prefixes
    (CLIP-L + OpenCLIP bigG / bigG alone), else by the cross-attention width (2048 / 1280)."""
    unet = take_prefix(state_dict, UNET_PREFIX)
    if "input_blocks.0.0.weight" not in unet:
        if any(".down_blocks." in k or k.startswith("down_blocks.") for k in state_dict):
            raise CheckpointError("the keys are in diffusers layout; keep such weights in a diffusers folder with its configs")
        raise CheckpointError("no UNet weights (model.diffusion_model.*): not a Stable Diffusion checkpoint")
    widths = cross_attention_widths(unet)
    if not widths:
        raise CheckpointError("the UNet has no cross-attention layers: not a text-to-image Stable Diffusion model")
    inpainting = tuple(unet["input_blocks.0.0.weight"].shape)[1] == INPAINTING_IN_CHANNELS
    if "label_emb.0.0.weight" in unet:
        candidates = [f for f in FAMILIES if f.added_conditioning]
        with_text = [f for f in candidates if all(has_prefix(state_dict, p) for p, _ in f.encoders)]
        by_width = [f for f in candidates if f.cross_attention_dim == widths[0]]
        family = max(with_text, key=lambda f: len(f.encoders)) if with_text else (by_width or candidates)[0]
        if inpainting and family.inpainting_config is None:
            raise CheckpointError(f"a 9-channel {family.title} UNet: there is no {family.title} inpainting model")
        return Detected(family=family.name, inpainting=inpainting, cross_attention_dim=widths[0],
                        text_layout=family.text.name if with_text else None)
    parts = split_components(state_dict)
    text_layout = next((f.text.name for f in FAMILIES if not f.added_conditioning and parts[f.text.name]), None)
    return Detected(family=family_of(widths[0], text_layout), inpainting=inpainting, cross_attention_dim=widths[0],
                    text_layout=text_layout)


def guess_prediction_type(path: Path, family: str, metadata: dict[str, str]) -> str:
    """Whether a model predicts noise or velocity; the weights cannot tell. Rules, first match wins:
    a sidecar ``<name>.yaml`` (the original inference config: ``parameterization: "v"`` → v_prediction),
    the scheduler config graphflow stores in files it writes, then the family's file-name rule (SD 2.x:
    "768" or "v-pred"/"vpred" → v_prediction). Everything else is epsilon."""
    sidecar = Path(path).with_suffix(".yaml")
    if sidecar.is_file():
        import yaml

        try:
            params = (yaml.safe_load(sidecar.read_text()) or {}).get("model", {}).get("params", {})
            return "v_prediction" if params.get("parameterization") == "v" else "epsilon"
        except (yaml.YAMLError, AttributeError):
            pass  # an unreadable sidecar falls through to the other rules
    stored: dict[str, Any] = json.loads(metadata.get(METADATA_PREFIX + "scheduler_config", "{}"))
    if stored.get("prediction_type") in ("epsilon", "v_prediction"):
        return stored["prediction_type"]
    stem_rule = family_named(family).v_prediction_stem
    if stem_rule and re.search(stem_rule, Path(path).stem.lower()):
        return "v_prediction"
    return "epsilon"


def config_folder(family: str, inpainting: bool, prediction_type: str) -> Path:
    """The shipped config folder of a family's variant: sd1, sd1-inpainting, sd2 (2.1 768-v), sd2-base, sd2-inpainting,
    sdxl, sdxl-inpainting, sdxl-refiner."""
    record = family_named(family)
    if inpainting:
        return CONFIGS / record.inpainting_config
    return CONFIGS / record.configs.get(prediction_type, record.configs["epsilon"])
