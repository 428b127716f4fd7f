"""Small LoRA and textual-inversion files for the built-in ``tiny-sd`` model (tests and example workflows).

Random weights in the real file layouts: the LoRAs use Kohya/A1111 key names (``lora_unet_*``,
``lora_te_*``, ``.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``), the embeddings A1111's ``.pt``
(``string_to_param``) and ``.safetensors`` (``emb_params``) formats. They prove that files load and
change outputs, not that they draw anything. :func:`ensure_assets` writes the missing ones into a
models directory (``scripts/make_assets.py`` calls it).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .builtin_models import build_tiny_components

LORA_RANK = 4
LORA_ALPHA = 2.0
TINY_TEXT_WIDTH = 32  # build_tiny_components' default cross_attention_dim
# name → seed; both adapt the UNet and the text encoder
TINY_LORAS = {"tiny-lora-a": 1, "tiny-lora-b": 2}
# name → (seed, vectors, file format)
TINY_EMBEDDINGS = {"tinyneg": (3, 2, ".pt"), "tinystyle": (4, 3, ".safetensors")}


def kohya_layer_names(unet: torch.nn.Module | None = None, text_encoder: torch.nn.Module | None = None
                      ) -> dict[str, torch.nn.Module]:
    """Kohya LoRA name → layer, for the layers a Kohya SD 1.x LoRA trains (attention, feed-forward,
    projections; plus one 3×3 resnet conv, as LoCon files add). Pass the parts the LoRA should adapt."""
    names: dict[str, torch.nn.Module] = {}
    for path, layer in unet.named_modules() if unet is not None else ():
        in_attention = ".attentions." in path and isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d))
        if in_attention or path == "down_blocks.1.resnets.0.conv1":
            names["lora_unet_" + path.replace(".", "_")] = layer
    for path, layer in text_encoder.named_modules() if text_encoder is not None else ():
        if path.startswith("encoder.layers.") and isinstance(layer, torch.nn.Linear):
            # Kohya names come from the transformers 4 layout, which had a text_model level
            names["lora_te_text_model_" + path.replace(".", "_")] = layer
    return names


def make_kohya_lora(unet: torch.nn.Module | None, text_encoder: torch.nn.Module | None, seed: int,
                    rank: int = LORA_RANK, alpha: float = LORA_ALPHA) -> dict[str, torch.Tensor]:
    """A random Kohya-layout LoRA state dict adapting the given modules (None = leave that part out)."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, layer in kohya_layer_names(unet, text_encoder).items():
        out_features, in_features = layer.weight.shape[:2]
        kernel = tuple(layer.weight.shape[2:])
        fan_in = in_features * (kernel[0] * kernel[1] if kernel else 1)
        down = torch.randn(rank, in_features, *kernel, generator=generator) / fan_in ** 0.5
        up = torch.randn(out_features, rank, *((1, 1) if kernel else ()), generator=generator) * 0.5
        state[f"{name}.lora_down.weight"] = down
        state[f"{name}.lora_up.weight"] = up
        state[f"{name}.alpha"] = torch.tensor(alpha)
    return state


def make_embedding(seed: int, vectors: int, width: int) -> torch.Tensor:
    return torch.randn(vectors, width, generator=torch.Generator().manual_seed(seed)) * 0.02


def save_embedding(vectors: torch.Tensor, path: Path) -> Path:
    """Write an embedding as A1111 does: ``.pt`` with string_to_param, ``.safetensors`` with emb_params."""
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        return _atomic(path, lambda tmp: save_file({"emb_params": vectors.contiguous()}, str(tmp)))
    return _atomic(path, lambda tmp: torch.save({"string_to_param": {"*": vectors}, "name": path.stem, "step": 0}, str(tmp)))


def save_lora(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> Path:
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in state.items()}
    return _atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata or {"ss_network_module": "networks.lora"}))


def _atomic(path: Path, write) -> Path:
    """Write through a temporary name, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    write(temporary)
    os.replace(temporary, path)
    return path


def ensure_assets(models_dir: Path) -> dict[str, Path]:
    """Write the tiny LoRAs (``loras/``) and embeddings (``embeddings/``) that are missing; return all paths."""
    models_dir = Path(models_dir)
    paths: dict[str, Path] = {}
    components = None
    for name, seed in TINY_LORAS.items():
        path = models_dir / "loras" / f"{name}.safetensors"
        if not path.exists():
            components = components or build_tiny_components()
            save_lora(make_kohya_lora(components["unet"], components["text_encoder"], seed), path)
        paths[name] = path
    for name, (seed, count, suffix) in TINY_EMBEDDINGS.items():
        path = models_dir / "embeddings" / f"{name}{suffix}"
        if not path.exists():
            save_embedding(make_embedding(seed, count, TINY_TEXT_WIDTH), path)
        paths[name] = path
    return paths
