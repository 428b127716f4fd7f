"""Where the models of each kind are, so an existing ComfyUI or AUTOMATIC1111 install serves as the models folder.

For a kind (``checkpoints``, ``vae``, ``loras``, ``embeddings``, ``upscale_models``, ``controlnet``,
``facerestore_models``, ``facedetection``) the folders
are, in order, those that exist among:

1. ``<models>/<kind>``: graphflow's layout, which is ComfyUI's ``models/`` folder (always listed: messages name it);
2. A1111's names for it in ``<models>``: ``Stable-diffusion``, ``VAE``, ``Lora`` and ``LyCORIS``, ``ESRGAN``,
   ``RealESRGAN`` and ``SwinIR``, ``ControlNet``, ``GFPGAN`` and ``Codeformer``; A1111 keeps ``embeddings/`` beside ``models/``;
3. the folders ComfyUI's ``extra_model_paths.yaml`` gives for the kind, in its documented format (sections with an
   optional ``base_path``, relative to the file's folder, and one path per line for each kind), read from
   ``<models>/extra_model_paths.yaml`` or ``<models>/../extra_model_paths.yaml`` (ComfyUI's own folder when
   ``<models>`` is its ``models/``).

Names may include sub-folders (``sd15/dreamshaper.safetensors``); ComfyUI's pack nodes also accept them with
backslashes, as ComfyUI writes them on Windows.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

from graphflow.errors import NodeInputError

A1111_NAMES = {
    "checkpoints": ("Stable-diffusion",),
    "vae": ("VAE",),
    "loras": ("Lora", "LyCORIS"),
    "upscale_models": ("ESRGAN", "RealESRGAN", "SwinIR"),
    "controlnet": ("ControlNet",),
    "facerestore_models": ("GFPGAN", "Codeformer"),
}
# The kinds' keys in extra_model_paths.yaml (ComfyUI's folder names; t2i_adapter shares controlnet's models)
YAML_KEYS = {"controlnet": ("controlnet", "t2i_adapter")}
YAML_NAME = "extra_model_paths.yaml"


def kind_folders(models_dir: Path | str, kind: str) -> list[Path]:
    """The folders that hold models of ``kind`` under ``models_dir``'s layouts (see the module docstring)."""
    root = Path(models_dir)
    candidates = [root / name for name in A1111_NAMES.get(kind, ())]
    if kind == "embeddings":
        candidates.append(root.parent / "embeddings")
    candidates += extra_folders(root).get(kind, [])
    return _distinct([root / kind] + [c for c in candidates if c.is_dir()])


def extra_folders(models_dir: Path) -> dict[str, list[Path]]:
    """Kind → folders from the first extra_model_paths.yaml found for ``models_dir``."""
    for path in (models_dir / YAML_NAME, models_dir.parent / YAML_NAME):
        if path.is_file():
            stat = path.stat()
            return _read_yaml(str(path), stat.st_mtime_ns, stat.st_size)
    return {}


@functools.lru_cache(maxsize=8)
def _read_yaml(path: str, _mtime: int, _size: int) -> dict[str, list[Path]]:
    import yaml

    where = Path(path)
    try:
        sections = yaml.safe_load(where.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise NodeInputError("name", f"{where} is not a readable {YAML_NAME}: {exc}",
                             "ComfyUI's format: sections of kind: path lines", where.name) from None
    if not isinstance(sections, dict) or not all(isinstance(s, dict) for s in sections.values()):
        raise NodeInputError("name", f"{where}: each top-level entry must be a section of kind: paths",
                             "ComfyUI's format: sections of kind: path lines", where.name)
    kinds: dict[str, list[Path]] = {}
    for section in sections.values():
        base = Path(os.path.expanduser(str(section.get("base_path", "")))) if section.get("base_path") else Path()
        base = base if base.is_absolute() else where.parent / base
        for key, value in section.items():
            if key in ("base_path", "is_default") or not isinstance(value, str):
                continue
            kind = next((k for k, keys in YAML_KEYS.items() if key in keys), key)
            for line in value.splitlines():
                if line.strip():
                    folder = Path(os.path.expanduser(line.strip()))
                    kinds.setdefault(kind, []).append(folder if folder.is_absolute() else base / folder)
    return kinds


def _distinct(folders: list[Path]) -> list[Path]:
    """The folders in order, each once (``vae`` and ``VAE`` are one folder where names ignore case)."""
    seen: set[object] = set()
    kept = []
    for folder in folders:
        try:
            identity: object = (folder.stat().st_dev, folder.stat().st_ino)
        except OSError:
            identity = folder
        if identity not in seen:
            seen.add(identity)
            kept.append(folder)
    return kept
