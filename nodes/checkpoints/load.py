"""Loading, the same code for every family: a single file in the original layout, a diffusers folder, a VAE."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..builtin_models import clip_tokenizer
from .build import cast, checked, from_folder, text_encoder_from_weights, unet_from_weights, vae_from_weights
from .common import CONFIGS, CheckpointError, Components, read_json, take_prefix
from .configs import assemble_config, stored_config
from .families import (config_folder, detect, family_named, family_of, guess_prediction_type, split_components,
                       text_layout_of, text_parts, text_subfolders)
from .reading import read_state_dict
from .text import derive_text_config
from .unet import derive_unet_config, unet_from_original
from .vae import VAE_PARTS, VAE_PREFIX, derive_vae_config, vae_from_original


def load_single_file(path: Path, prediction_type: str = "auto", dtype: torch.dtype | None = None) -> Components:
    """Build UNet, VAE, text encoder(s), tokenizer(s) and scheduler config from one original-layout file, offline."""
    state_dict, metadata = read_state_dict(path, dtype)  # cast while streaming: one copy of the weights at a time
    detected = detect(state_dict)
    if detected.text_layout is None:
        raise CheckpointError("the file has no text encoder (cond_stage_model.* / conditioner.embedders.*); "
                              "it is not a full checkpoint")
    parts = split_components(state_dict)
    if not parts["vae"]:
        raise CheckpointError("the file has no VAE (first_stage_model.*); it is not a full checkpoint")
    if prediction_type == "auto":
        prediction_type = guess_prediction_type(path, detected.family, metadata)
    family = family_named(detected.family)
    base = config_folder(detected.family, detected.inpainting, prediction_type)

    def config(component: str, derived: dict[str, Any]) -> dict[str, Any]:
        return assemble_config(component, read_json(base / component / "config.json"), derived, metadata)

    unet_config = config("unet", derive_unet_config(parts["unet"]))
    vae_config = config("vae", derive_vae_config(parts["vae"]))
    encoders = []
    for (_, layout), weights, subfolder in zip(family.encoders, text_parts(state_dict, family), text_subfolders(family)):
        text_weights = layout.from_original(weights)
        text_config = config(subfolder, derive_text_config(text_weights))
        encoder = text_encoder_from_weights(text_config, text_weights, layout.model_class, subfolder.replace("_", " "))
        encoders.append((cast(encoder, dtype), subfolder))
    width = sum(int(encoder.config.hidden_size) for encoder, _ in encoders)
    if unet_config["cross_attention_dim"] != width:
        encoders_produce = "the text encoders produce" if len(encoders) > 1 else "the text encoder produces"
        raise CheckpointError(f"{family.title} file: the UNet attends to {unet_config['cross_attention_dim']}-wide text "
                              f"features but {encoders_produce} {width}-wide ones: the parts do not belong together")
    if family.size_ids:
        unet_config["addition_time_embed_dim"] = size_id_width(family, unet_config, int(encoders[-1][0].config.projection_dim))
    scheduler_config = {**read_json(base / "scheduler" / "scheduler_config.json"),
                        **stored_config(metadata, "scheduler"), "prediction_type": prediction_type}
    tokenizers = [clip_tokenizer(read_json(base / subfolder.replace("text_encoder", "tokenizer") / "tokenizer_config.json")["pad_token"])
                  for _, subfolder in encoders]
    second = (encoders[1][0], tokenizers[1]) if len(encoders) > 1 else (None, None)
    return Components(
        unet=cast(unet_from_weights(unet_config, unet_from_original(parts["unet"], unet_config)), dtype),
        vae=cast(vae_from_weights(vae_config, vae_from_original(parts["vae"], vae_config)), dtype),
        text_encoder=encoders[0][0],
        tokenizer=tokenizers[0],
        scheduler_config=scheduler_config,
        family=detected.family,
        prediction_type=prediction_type,
        text_encoder_2=second[0],
        tokenizer_2=second[1],
        zero_empty_negative=bool(read_json(base / "model_index.json").get("force_zeros_for_empty_prompt", False)),
    )


def size_id_width(family, unet_config: dict[str, Any], pooled_width: int) -> int:
    """How wide SDXL embeds each size id, read from the widths: the UNet's added embedding takes the pooled text
    plus the family's 6 (base) or 5 (refiner) ids, each equally wide (256 at full size)."""
    total = int(unet_config["projection_class_embeddings_input_dim"])
    width, rest = divmod(total - pooled_width, family.size_ids)
    if rest or width < 1:
        raise CheckpointError(f"{family.title} file: the UNet embeds {total} added values, which a {pooled_width}-wide "
                              f"pooled text embedding plus {family.size_ids} equal size ids cannot make: the parts do "
                              "not belong together")
    return width


def load_diffusers_vae(folder: Path, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """An AutoencoderKL folder (config.json + weights)."""
    from diffusers import AutoencoderKL

    return from_folder(AutoencoderKL, folder, dtype, "VAE")


def load_diffusers_folder(folder: Path, prediction_type: str = "auto", dtype: torch.dtype | None = None) -> Components:
    """A diffusers StableDiffusionPipeline or SDXL pipeline folder; its own configs describe the model (the tiny
    models too). SDXL base has ``text_encoder`` and ``text_encoder_2``; the refiner only ``text_encoder_2``."""
    from diffusers import UNet2DConditionModel

    folder = Path(folder)
    try:
        index = read_json(folder / "model_index.json")
        unet = checked(UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=dtype, local_files_only=True,
                                                           output_loading_info=True), "UNet")
        encoders = [(sub, tokenizer) for sub, tokenizer in (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2"))
                    if (index.get(sub) or [None])[0] is not None]
        if not encoders:
            raise CheckpointError(f"the diffusers folder {folder.name} names no text encoder in model_index.json")
        loaded = [(folder_text_encoder(folder, sub, dtype), folder_tokenizer(folder / tokenizer)) for sub, tokenizer in encoders]
        scheduler_config = read_json(folder / "scheduler" / "scheduler_config.json")
    except (OSError, ValueError) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f"cannot load the diffusers folder {folder.name}: {error}") from None
    vae = load_diffusers_vae(folder / "vae", dtype)
    if prediction_type == "auto":
        prediction_type = scheduler_config.get("prediction_type", "epsilon")
    (text_encoder, tokenizer), (text_encoder_2, tokenizer_2) = loaded[0], (loaded[1] if len(loaded) > 1 else (None, None))
    if unet.config.addition_embed_type == "text_time":  # SDXL's added size / pooled-text conditioning
        family = "sdxl" if text_encoder_2 is not None else "sdxl-refiner"
    else:
        family = family_of(int(unet.config.cross_attention_dim), text_layout_of(text_encoder.config.hidden_act))
    return Components(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
        scheduler_config={**scheduler_config, "prediction_type": prediction_type},
        family=family, prediction_type=prediction_type, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
        zero_empty_negative=bool(index.get("force_zeros_for_empty_prompt", False)),
    )


def folder_text_encoder(folder: Path, subfolder: str, dtype: torch.dtype | None) -> torch.nn.Module:
    """A pipeline folder's text encoder, as the class its config names (SDXL's second one has a projection)."""
    import transformers

    config = read_json(folder / subfolder / "config.json")
    name = next(iter(config.get("architectures") or []), "CLIPTextModel")
    if name not in ("CLIPTextModel", "CLIPTextModelWithProjection"):
        raise CheckpointError(f"{subfolder} is a {name}; graphflow loads CLIP text encoders")
    model_class = getattr(transformers, name)
    return checked(model_class.from_pretrained(folder, subfolder=subfolder, dtype=dtype, local_files_only=True,
                                               output_loading_info=True), subfolder.replace("_", " "))


def folder_tokenizer(tokenizer_dir: Path):
    from transformers import CLIPTokenizer

    if any((tokenizer_dir / f).exists() for f in ("tokenizer.json", "vocab.json")):
        return CLIPTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    # vocabulary not shipped with the folder: the real CLIP BPE is the same for every family
    return clip_tokenizer(read_json(tokenizer_dir / "tokenizer_config.json").get("pad_token", "<|endoftext|>"))


def load_vae_file(path: Path, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """A VAE single file: a whole checkpoint's ``first_stage_model.*`` or bare VAE keys (``encoder.*``,
    ``decoder.*``, ``quant_conv.*`` as in vae-ft-mse-840000-ema-pruned)."""
    state_dict, _ = read_state_dict(path, dtype)
    for prefix in (VAE_PREFIX, "vae."):
        if any(k.startswith(prefix) for k in state_dict):
            state_dict = take_prefix(state_dict, prefix)
            break
    if "encoder.conv_in.weight" not in state_dict:
        if any(k.startswith("encoder.down_blocks.") for k in state_dict):
            raise CheckpointError("the VAE keys are in diffusers layout; keep such a VAE in a folder with its config.json")
        raise CheckpointError("no VAE weights (encoder.conv_in.weight) in the file: not a VAE")
    weights = {k: v for k, v in state_dict.items() if k.startswith(VAE_PARTS)}
    config = {**read_json(CONFIGS / "sd1" / "vae" / "config.json"), **derive_vae_config(weights)}
    return cast(vae_from_weights(config, vae_from_original(weights, config)), dtype)
