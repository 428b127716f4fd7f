"""Small LoRA and textual-inversion files for a given model (tests and the example workflows).

Random weights in the real file layouts: the LoRAs use Kohya/A1111 key names (``lora_unet_*``,
``lora_te_*``, ``.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``), the embeddings A1111's ``.pt``
(``string_to_param``) and ``.safetensors`` (``emb_params``) formats. They prove that files load and
change outputs, not that they draw anything. Their shapes come from the model they are built for, and
their size from that model's weights (a LoRA moves each weight by about a third of its spread), so the
same files make a visible but not destructive change to a trained model too.

:func:`write_assets` writes the set for a UNet + text encoder (``scripts/make_assets.py`` calls it for the
checkpoint the example workflows use); :func:`ensure_assets` writes the set for the built-in ``tiny-sd``
into a models directory when missing (the tests call it).
"""
from __future__ import annotations

import io
from pathlib import Path

import torch

from graphflow.paths import atomic_save

LORA_RANK = 2
LORA_ALPHA = 1.0
LORA_DTYPE = "float16"  # the files the workflows ship: half the bytes, plenty for a random update
LORA_RELATIVE_SIZE = 0.3  # standard deviation of a LoRA update at strength 1, relative to the weight's
# name → seed; both adapt the UNet's and the text encoder's attention projections
TINY_LORAS = {"tiny-lora-a": 1, "tiny-lora-b": 2}
# name → (seed, vectors, file format)
TINY_EMBEDDINGS = {"tinyneg": (3, 2, ".pt"), "tinystyle": (4, 3, ".safetensors")}
_ATTENTION_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0", "q_proj", "k_proj", "v_proj", "out_proj")


def kohya_layer_names(unet: torch.nn.Module | None = None, text_encoder: torch.nn.Module | None = None,
                      attention_only: bool = False) -> dict[str, torch.nn.Module]:
    """Kohya LoRA name → layer, for the layers a Kohya SD 1.x LoRA trains (attention, feed-forward,
    projections; plus one 3×3 resnet conv, as LoCon files add). Pass the parts the LoRA should adapt;
    ``attention_only`` keeps just the query/key/value/output projections (what the shipped files adapt)."""
    names: dict[str, torch.nn.Module] = {}
    for path, layer in unet.named_modules() if unet is not None else ():
        in_attention = ".attentions." in path and isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d))
        if attention_only and not path.endswith(_ATTENTION_PROJECTIONS):
            continue
        if in_attention or path == "down_blocks.1.resnets.0.conv1":
            names["lora_unet_" + path.replace(".", "_")] = layer
    for path, layer in text_encoder.named_modules() if text_encoder is not None else ():
        if attention_only and not path.endswith(_ATTENTION_PROJECTIONS):
            continue
        if path.startswith("encoder.layers.") and isinstance(layer, torch.nn.Linear):
            # Kohya names come from the transformers 4 layout, which had a text_model level
            names["lora_te_text_model_" + path.replace(".", "_")] = layer
    return names


def make_kohya_lora(unet: torch.nn.Module | None, text_encoder: torch.nn.Module | None, seed: int,
                    rank: int = LORA_RANK, alpha: float = LORA_ALPHA, attention_only: bool = False,
                    dtype: str = "float32") -> dict[str, torch.Tensor]:
    """A random Kohya-layout LoRA state dict adapting the given modules (None = leave that part out).

    Each layer's update ``alpha/rank · up @ down`` has a spread of :data:`LORA_RELATIVE_SIZE` times the
    spread of the weight it adapts."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, layer in kohya_layer_names(unet, text_encoder, attention_only).items():
        weight = layer.weight.detach().float()
        out_features, in_features = weight.shape[:2]
        kernel = tuple(weight.shape[2:])
        fan_in = in_features * (kernel[0] * kernel[1] if kernel else 1)
        down = torch.randn(rank, in_features, *kernel, generator=generator) / fan_in ** 0.5
        # an update entry sums rank products: std(update) = alpha/rank · sqrt(rank) · std(up) · std(down)
        up_std = LORA_RELATIVE_SIZE * (float(weight.std()) or 0.02) * fan_in ** 0.5 / ((alpha / rank) * rank ** 0.5)
        up = torch.randn(out_features, rank, *((1, 1) if kernel else ()), generator=generator) * up_std
        state[f"{name}.lora_down.weight"] = down.to(getattr(torch, dtype))
        state[f"{name}.lora_up.weight"] = up.to(getattr(torch, dtype))
        state[f"{name}.alpha"] = torch.tensor(alpha, dtype=getattr(torch, dtype))
    return state


def make_asset_lora(unet: torch.nn.Module, text_encoder: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The shipped LoRA layout: attention projections of the UNet and the text encoder, float16 (a few KB)."""
    return make_kohya_lora(unet, text_encoder, seed, attention_only=True, dtype=LORA_DTYPE)


def make_embedding(seed: int, vectors: int, text_encoder: torch.nn.Module) -> torch.Tensor:
    """Random textual-inversion vectors (n, width) with the spread of the encoder's token embeddings."""
    table = text_encoder.get_input_embeddings().weight.detach().float()
    noise = torch.randn(vectors, table.shape[1], generator=torch.Generator().manual_seed(seed))
    return noise * float(table.std())


def save_embedding(vectors: torch.Tensor, path: Path) -> Path:
    """Write an embedding as A1111 does: ``.pt`` with string_to_param, ``.safetensors`` with emb_params."""
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        return _atomic(path, lambda tmp: save_file({"emb_params": vectors.contiguous()}, str(tmp)))
    buffer = io.BytesIO()  # torch.save names the archive after the file: through memory, the bytes do not vary
    torch.save({"string_to_param": {"*": vectors}, "name": path.stem, "step": 0}, buffer)
    return _atomic(path, lambda tmp: tmp.write_bytes(buffer.getvalue()))


def save_lora(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> Path:
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in state.items()}
    return _atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata or {"ss_network_module": "networks.lora"}))


def _atomic(path: Path, write) -> Path:
    """Write through a temporary name, so a reader never sees half a file; a rebuilt asset replaces the old one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_save(path, write, replace=True)


def asset_paths(root: Path) -> dict[str, Path]:
    """Where the assets go under ``root`` (a models directory or an asset folder): ``loras/``, ``embeddings/``."""
    root = Path(root)
    paths = {name: root / "loras" / f"{name}.safetensors" for name in TINY_LORAS}
    paths.update({name: root / "embeddings" / f"{name}{suffix}" for name, (_, _, suffix) in TINY_EMBEDDINGS.items()})
    return paths


def write_assets(root: Path, unet: torch.nn.Module, text_encoder: torch.nn.Module, overwrite: bool = True
                 ) -> dict[str, Path]:
    """Write the LoRAs and embeddings for this UNet + text encoder under ``root``; return every path.

    The files depend only on the model's weights and the fixed seeds: writing twice gives the same bytes.
    With ``overwrite=False`` files that exist are kept."""
    paths = asset_paths(root)
    for name, seed in TINY_LORAS.items():
        if overwrite or not paths[name].exists():
            save_lora(make_asset_lora(unet, text_encoder, seed), paths[name])
    for name, (seed, count, _) in TINY_EMBEDDINGS.items():
        if overwrite or not paths[name].exists():
            save_embedding(make_embedding(seed, count, text_encoder), paths[name])
    return paths


def ensure_assets(models_dir: Path) -> dict[str, Path]:
    """Write the assets for the built-in ``tiny-sd`` that are missing under ``models_dir``; return all paths."""
    paths = asset_paths(models_dir)
    if all(path.exists() for path in paths.values()):
        return paths
    from .builtin_models import build_tiny_components

    components = build_tiny_components()
    return write_assets(models_dir, components["unet"], components["text_encoder"], overwrite=False)
