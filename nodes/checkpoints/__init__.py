"""Stable Diffusion weights in and out: diffusers folders and original-layout single files.

Pure functions, no nodes (``nodes/loaders.py`` wraps them). What is data and what is code:

* **Data.** ``families.py``: one record per model family (SD 1.x, SD 2.x, SDXL base, SDXL refiner) —
  cross-attention width, where each text encoder sits in a single file and in which layout, the shipped config folder of each variant (prediction
  type, inpainting). ``unet.py``, ``vae.py``, ``text.py``: the key-renaming tables of each component's layout
  (diffusers ↔ original CompVis / A1111), each read in either direction so the reader and the writer cannot
  drift apart. A new family or component layout is a new record or table.
* **Code**, shared by every family: ``families.detect`` reads the family from a file's weights; ``load.py`` builds
  diffusers / transformers modules offline from the configs shipped in ``nodes/models/configs``, every size the
  weights reveal (channels, depths, widths, vocabulary) read from the tensor shapes (``configs.py``), strictly
  (``build.py``: a weight the architecture needs but the file lacks, or one the file has that the architecture
  does not use, is an error — never a silently random tensor); ``writing.py`` writes a model back in the
  original layout (:func:`save_single_file`); ``reading.py`` reads safetensors and weights-only pickles.
"""
from __future__ import annotations

from .build import load_exact
from .common import CONFIGS, CheckpointError, Components, Detected, indices, read_json, take_prefix
from .configs import size_defaults
from .families import (FAMILIES, OPENCLIP_PREFIX, Family, config_folder, detect, family_of, guess_prediction_type,
                       loadable_titles, split_components, text_parts, text_subfolders)
from .load import load_diffusers_folder, load_diffusers_vae, load_single_file, load_vae_file
from .reading import read_state_dict
from .text import clip_from_original, derive_text_config, openclip_from_original, openclip_g_from_original
from .unet import UNET_PREFIX, derive_unet_config
from .vae import derive_vae_config, vae_to_original
from .writing import original_state_dict, save_single_file

__all__ = [  # the loading API, and the pieces its tests take apart
    "CONFIGS", "FAMILIES", "OPENCLIP_PREFIX", "UNET_PREFIX", "CheckpointError", "Components", "Detected", "Family",
    "clip_from_original", "config_folder", "derive_text_config", "derive_unet_config", "derive_vae_config", "detect",
    "family_of", "guess_prediction_type", "indices", "load_diffusers_folder", "load_diffusers_vae", "load_exact",
    "load_single_file", "load_vae_file", "openclip_from_original", "original_state_dict", "read_json",
    "read_state_dict", "save_single_file", "size_defaults", "split_components", "take_prefix", "vae_to_original",
    "loadable_titles", "openclip_g_from_original", "text_parts", "text_subfolders",
]
