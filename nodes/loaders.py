"""Loader nodes: LoadCheckpoint (MODEL, CLIP, VAE) and LoadVAE (VAE).

Models (README section)
-----------------------
Checkpoints go in the models directory (``./models``, or ``GRAPHFLOW_MODELS_DIR``) or its ``checkpoints/``
subfolder; separate VAEs in ``models/vae/`` (the models directory itself is searched too). The models directory may
also be a ComfyUI ``models/`` folder or an AUTOMATIC1111 one (``Stable-diffusion/``, ``VAE/``, ``Lora/``,
``ESRGAN/``, ``embeddings/`` beside it), and ComfyUI's ``extra_model_paths.yaml`` next to it or in it adds
folders per kind (see ``nodes/model_folders.py``). A name resolves, first match wins, to:

1. a built-in model: ``tiny-sd`` (random tiny SD1-architecture model, built on first use, for tests and demos),
   ``tiny-sd-inpainting`` (its 9-channel variant), ``tiny-sdxl`` / ``tiny-sdxl-refiner`` (random tiny SDXL base
   and refiner, nodes/builtin_sdxl.py) and ``toy-shapes`` (a small trained model shipped in the package, when present);
2. a diffusers folder ``<name>/`` holding ``model_index.json`` (for LoadVAE: an AutoencoderKL folder with
   ``config.json``, or a pipeline folder's ``vae/``);
3. a single file ``<name>``, ``<name>.safetensors`` or ``<name>.ckpt`` (LoadVAE also ``.pt``) in the original
   CompVis / A1111 / Stability layout, as published for SD 1.x, 2.x and SDXL. ``.ckpt`` files are read with
   ``torch.load(weights_only=True)``: one that needs arbitrary pickled objects is refused — convert it to
   ``.safetensors``.

Names are relative to those folders (``sub/model`` works); ``..`` and absolute paths are refused. Single files load
fully offline from the configs shipped in ``nodes/models/configs``; the sizes come from the weights themselves.

Detection: a UNet with SDXL's added embedding (``label_emb``) is SDXL base (CLIP-L + OpenCLIP bigG) or refiner
(bigG alone); otherwise a UNet cross-attention width of 768 is SD 1.x, 1024 is SD 2.x (other widths: an OpenCLIP
text encoder means SD 2.x); a 9-channel UNet input is an inpainting model. Whether an SD 2.x model predicts velocity cannot be
read from its weights. With ``prediction_type="auto"`` a diffusers folder's scheduler config decides; for a single
file, first a sidecar ``<name>.yaml`` (the original inference config: ``parameterization: "v"``), then, for SD 2.x,
the file name: "768" or "v-pred"/"vpred" in it means v_prediction (the official ``768-v-ema`` and
``v2-1_768-ema-pruned`` files). Everything else is epsilon; set ``prediction_type`` to override.

``device="auto"`` uses CUDA in float16 when available, else the CPU in float32. LoadCheckpoint's ``attention``,
``offload`` and ``compile_unet`` are nodes/speed.py's.
"""
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import Field

from graphflow import paths
from graphflow.context import RunContext, Settings
from graphflow.errors import NodeInputError
from graphflow.node import node

from . import checkpoints
from .builtin_models import PACKAGE_MODELS, TINY_CONTROLNET_NAME, TINY_VERSION, tiny_sd_folder
from .builtin_sdxl import TINY_SDXL_CONTROLNET_NAME, TINY_SDXL_NAMES, TINY_SDXL_VERSION, tiny_sdxl_folder
from .model_folders import kind_folders
from .search import MissingFile, preflight_check
from .speed import NEUTRAL_INPUTS, Attention, Compile, Offload, check_offload, compile_module, set_attention
from .speed import offload as offload_models
from .values import CLIP, MODEL, VAE, Clip, Model, Vae

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
VAE_SUFFIXES = (".safetensors", ".ckpt", ".pt")
TOY_SHAPES = PACKAGE_MODELS / "toy-shapes"
# Built-in models made from a fixed seed: their name and version identify their weights.
BUILTIN_VERSIONS = {"tiny-sd": TINY_VERSION, "tiny-sd-inpainting": TINY_VERSION, TINY_CONTROLNET_NAME: TINY_VERSION,
                    **dict.fromkeys((*TINY_SDXL_NAMES, TINY_SDXL_CONTROLNET_NAME), TINY_SDXL_VERSION)}
# Annotated descriptions keep plain Python defaults, so the node functions stay directly callable.
Dtype = Annotated[Literal["auto", "float32", "float16", "bfloat16"],
                  Field(description="weight precision; auto = float16 on a GPU, float32 on the CPU")]
Device = Annotated[Literal["auto", "cpu", "cuda", "mps"],
                   Field(description="where the weights live; auto = CUDA when available, else the CPU")]


# ---------------------------------------------------------------------------------------------------------------
# Name resolution
# ---------------------------------------------------------------------------------------------------------------

def builtin_folders() -> dict[str, Any]:
    """Built-in names → a function giving their diffusers folder (tiny models are built on first use)."""
    builtins = {"tiny-sd": tiny_sd_folder, "tiny-sd-inpainting": lambda: tiny_sd_folder(in_channels=9),
                "tiny-sdxl": tiny_sdxl_folder, "tiny-sdxl-refiner": lambda: tiny_sdxl_folder(refiner=True)}
    if (TOY_SHAPES / "model_index.json").is_file():
        builtins["toy-shapes"] = lambda: TOY_SHAPES
    return builtins


def inside(folder: Path, name: str) -> Path:
    """``folder / name``, provided ``name`` stays inside ``folder`` by :func:`graphflow.paths.resolve_inside`'s rules
    (relative, no ``..``, no symlink that leads out); the path keeps its own name (a sidecar ``.yaml`` and the
    prediction-type rules go by the name the user gave, not by a link's target)."""
    try:
        paths.resolve_inside(folder, name)
    except paths.UnsafePath as exc:
        raise NodeInputError("name", f"a model name must be a relative path inside the models directory: {exc}",
                             expected="a name such as 'v1-5-pruned-emaonly' or 'sub/model.safetensors'", received=name) from None
    return Path(folder) / name


def check_contents_inside(folder: Path, model: Path) -> None:
    """A model folder is read file by file: every file and sub-folder in it must stay inside ``folder`` by the
    same rule as a single file's name (LoRA, embeddings and upscalers follow it too), so a symlink inside the
    folder cannot make a loader read what lies outside the models directory."""
    for parent, folders, files in os.walk(model):  # symlinked sub-folders are listed, not entered
        for entry in (*folders, *files):
            path = Path(parent) / entry
            try:
                paths.resolve_inside(folder, path.relative_to(folder).as_posix())
            except paths.UnsafePath:
                held = path.relative_to(model).as_posix()
                raise NodeInputError("name", f"model folder {model.name!r} holds {held!r}, a symlink that leads "
                                     "out of the models directory", "files inside the models directory", held) from None


def is_checkpoint_folder(path: Path) -> bool:
    return (path / "model_index.json").is_file()


def is_vae_folder(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "vae" / "config.json").is_file()


def find_in(name: str, folders: list[Path], suffixes: tuple[str, ...], is_folder) -> Path | None:
    for folder in folders:
        candidate = inside(folder, name)
        if candidate.is_dir() and is_folder(candidate):
            check_contents_inside(folder, candidate)
            return candidate
        for path in [candidate] + [inside(folder, name + suffix) for suffix in suffixes]:
            if path.is_file():
                return path
    return None


def listing(folders: list[Path], suffixes: tuple[str, ...], is_folder) -> list[str]:
    names: list[str] = []
    for folder in folders:
        if folder.is_dir():
            names += sorted(p.name for p in folder.iterdir()
                            if (p.is_file() and p.suffix in suffixes) or (p.is_dir() and is_folder(p)))
    return list(dict.fromkeys(names))


def checkpoint_dirs(models_dir: Path) -> list[Path]:
    return [Path(models_dir)] + kind_folders(models_dir, "checkpoints")


def vae_dirs(models_dir: Path) -> list[Path]:
    return kind_folders(models_dir, "vae") + [Path(models_dir)]


def available_models(folders: list[Path], suffixes: tuple[str, ...], is_folder, builtins=builtin_folders) -> list[str]:
    return list(builtins()) + listing(folders, suffixes, is_folder)


def locate(name: str, folders: list[Path], suffixes: tuple[str, ...], is_folder, builtins=builtin_folders) -> Path | Any:
    """Built-in name (its folder-building function, not yet called; ``builtins()`` names them), then folders in
    order; a miss lists every name that would work."""
    inside(folders[0], name)  # a bad name is refused before built-in names are looked up
    named = builtins()
    if name in named:
        return named[name]
    found = find_in(name, folders, suffixes, is_folder)
    if found is None:
        where = ", ".join(str(f) for f in folders)
        raise MissingFile("name", f"no model named {name!r} (looked in {where})",
                          expected=available_models(folders, suffixes, is_folder, builtins), received=name)
    return found


def resolve(name: str, folders: list[Path], suffixes: tuple[str, ...], is_folder, builtins=builtin_folders) -> Path:
    """The model's file or folder; a built-in one is built on first use."""
    found = locate(name, folders, suffixes, is_folder, builtins)
    return found if isinstance(found, Path) else Path(found())


def model_preflight(folders_of, suffixes: tuple[str, ...], is_folder, builtins=builtin_folders):
    """A node preflight: does ``name`` resolve (a built-in name does, without building the model)?"""

    def preflight(literals: dict[str, Any], settings: Settings) -> list:
        folders = folders_of(settings.models_dir)
        return preflight_check(lambda: locate(literals["name"], folders, suffixes, is_folder, builtins),
                               lambda: available_models(folders, suffixes, is_folder, builtins))

    return preflight


def file_identity(path: Path) -> str:
    """Path, size and modification time of every file that makes up a model (hashing gigabytes would be too slow).
    A single file's sidecar ``.yaml`` counts: it can change the prediction type."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path, path.with_suffix(".yaml")]
    parts = [f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files if p.is_file()]
    return "|".join(parts)


def model_fingerprint(folders_of, suffixes: tuple[str, ...], is_folder, builtins=builtin_folders,
                      versions: dict[str, int] | None = None):
    """A node fingerprint: the identity of the file or folder ``name`` resolves to; for a deterministic built-in
    (BUILTIN_VERSIONS, plus a loader's own ``versions``) its name and version."""
    deterministic = {**BUILTIN_VERSIONS, **(versions or {})}

    def fingerprint(literals: dict[str, Any], settings: Settings) -> str:
        name = literals.get("name", "")
        if name in deterministic:  # no need to build it just to fingerprint
            return f"builtin:{name}:v{deterministic[name]}"
        return file_identity(resolve(name, folders_of(settings.models_dir), suffixes, is_folder, builtins))

    return fingerprint


# ---------------------------------------------------------------------------------------------------------------
# Device and dtype
# ---------------------------------------------------------------------------------------------------------------

def pick_device(device: str) -> "torch.device":
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available[device]:
        raise NodeInputError("device", f"{device} is not available on this machine",
                             expected=[d for d, ok in available.items() if ok], received=device)
    return torch.device(device)


def pick_dtype(dtype: str, device: "torch.device") -> "torch.dtype":
    if dtype == "auto":
        return torch.float32 if device.type == "cpu" else torch.float16
    return getattr(torch, dtype)  # a name of the Dtype literal: torch.float32, torch.float16, torch.bfloat16


def load_or_name_error(name: str, path: Path, load, expected: str):
    """``load()`` of the model ``name`` resolved to (``path``); a file that cannot be read is the loader node's
    one-line error on its ``name`` input, saying what was expected."""
    try:
        return load()
    except checkpoints.CheckpointError as error:
        raise NodeInputError("name", f"{name} cannot be loaded: {error}", expected=expected, received=path.name) from None


# ---------------------------------------------------------------------------------------------------------------
# Nodes
# ---------------------------------------------------------------------------------------------------------------

@node(
    outputs={"model": MODEL, "clip": CLIP, "vae": VAE},
    category="loaders",
    pool="model",
    fingerprint=model_fingerprint(checkpoint_dirs, CHECKPOINT_SUFFIXES, is_checkpoint_folder),
    preflight=model_preflight(checkpoint_dirs, CHECKPOINT_SUFFIXES, is_checkpoint_folder),
    neutral=NEUTRAL_INPUTS,
)
def LoadCheckpoint(
    name: Annotated[str, Field(description="built-in name, or a diffusers folder / file in models/ or models/checkpoints/")] = "toy-shapes",
    prediction_type: Annotated[Literal["auto", "epsilon", "v_prediction"], Field(
        description="what the UNet predicts; auto reads the scheduler config, a sidecar .yaml or the file name")] = "auto",
    dtype: Dtype = "auto",
    device: Device = "auto",
    attention: Attention = "sdpa",
    offload: Offload = "none",
    compile_unet: Compile = False,
    *,
    ctx: RunContext,
):
    """Load an SD 1.x / 2.x / SDXL base, refiner or inpainting checkpoint: a built-in name, a diffusers folder or a single file.

    ``prediction_type`` overrides what the model is taken to predict (SD 2.x 768 models predict velocity).
    ``attention``, ``offload`` and ``compile_unet`` trade speed for memory or the reverse (nodes/speed.py); they
    do not change the results beyond float rounding, so what is computed from the model is cached across them."""
    path = resolve(name, checkpoint_dirs(ctx.settings.models_dir), CHECKPOINT_SUFFIXES, is_checkpoint_folder)
    target = pick_device(device)
    check_offload(offload, target)
    torch_dtype = pick_dtype(dtype, target)
    read = checkpoints.load_diffusers_folder if path.is_dir() else checkpoints.load_single_file
    parts = load_or_name_error(name, path, lambda: read(path, prediction_type, torch_dtype),
                               f"a {checkpoints.loadable_titles()} checkpoint (or an inpainting variant)")
    home = "cpu" if offload != "none" else target  # offloaded weights rest in CPU memory
    unet, text_encoder, vae = parts.unet.to(home), parts.text_encoder.to(home), parts.vae.to(home)
    second = parts.text_encoder_2.to(home) if parts.text_encoder_2 is not None else None
    set_attention(unet, attention, target, torch_dtype)
    offload_models([m for m in (unet, text_encoder, second, vae) if m is not None], offload, target)
    if compile_unet:
        compile_module(unet)
    model = Model(unet=unet, scheduler_config=parts.scheduler_config, family=parts.family,
                  prediction_type=parts.prediction_type, name=name,
                  vae_scale_factor=2 ** (len(parts.vae.config.block_out_channels) - 1),
                  zero_empty_negative=parts.zero_empty_negative)
    clip = Clip(tokenizer=parts.tokenizer, text_encoder=text_encoder, family=parts.family, name=name,
                text_encoder_2=second, tokenizer_2=parts.tokenizer_2)
    return model, clip, Vae(vae=vae, name=name)


@node(
    outputs={"vae": VAE},
    category="loaders",
    pool="model",
    fingerprint=model_fingerprint(vae_dirs, VAE_SUFFIXES, is_vae_folder),
    preflight=model_preflight(vae_dirs, VAE_SUFFIXES, is_vae_folder),
)
def LoadVAE(
    name: Annotated[str, Field(description="a VAE file or diffusers folder in models/vae/ or models/")],
    dtype: Dtype = "auto",
    device: Device = "auto",
    *,
    ctx: RunContext,
) -> Vae:
    """Load a separate VAE (e.g. vae-ft-mse-840000-ema-pruned) from models/vae: a single file or a diffusers folder."""
    path = resolve(name, vae_dirs(ctx.settings.models_dir), VAE_SUFFIXES, is_vae_folder)
    target = pick_device(device)
    torch_dtype = pick_dtype(dtype, target)
    source = path / "vae" if path.is_dir() and (path / "vae" / "config.json").is_file() else path  # a pipeline's vae/
    read = checkpoints.load_diffusers_vae if path.is_dir() else checkpoints.load_vae_file
    vae = load_or_name_error(name, path, lambda: read(source, torch_dtype), "a VAE file or folder")
    return Vae(vae=vae.to(target), name=name)
