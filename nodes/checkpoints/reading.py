"""Reading a weights file: safetensors or a PyTorch pickle, the latter only with ``weights_only=True``."""
from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch

from .common import CheckpointError


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


def load_pickled_weights(path: Path):
    """``torch.load(path, weights_only=True)`` on the CPU, for every pickled weights file (checkpoints,
    embeddings): a failure is one :class:`CheckpointError` line of ours, never torch's text (colour codes,
    advice to load with ``weights_only=False``, links)."""
    path = Path(path)
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as error:
        text = torch_message(error)
        culprit = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if culprit is None:  # a damaged pickle (or not a pickle at all), not a refused one
            reason = re.search(r"WeightsUnpickler error:\s*(.+)", text)
            raise CheckpointError(f"{path.name} is neither a safetensors file nor a PyTorch checkpoint "
                                  f"({reason[1].strip() if reason else text.splitlines()[0]})") from None
        raise CheckpointError(
            f"{path.name} contains pickled Python objects besides tensors ({culprit[1]}); graphflow reads pickled "
            "files with weights_only=True and never runs pickle code from a file. Convert it to .safetensors with "
            "a tool you trust.") from None
    except Exception as error:  # torch reports garbage as KeyError / RuntimeError with terse messages
        raise CheckpointError(f"{path.name} is neither a safetensors file nor a PyTorch checkpoint "
                              f"({type(error).__name__}: {torch_message(error).splitlines()[0] if str(error) else ''})") from None


def torch_message(error: BaseException) -> str:
    """An exception's text without terminal colour codes, its lines stripped and blank ones dropped."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    return "\n".join(line.strip() for line in text.splitlines() if line.strip()) or type(error).__name__


def as_dtype(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """Floating-point weights in ``dtype`` (None: as stored); integer buffers stay as they are."""
    return tensor if dtype is None or not tensor.is_floating_point() or tensor.dtype == dtype else tensor.to(dtype)


def read_state_dict(path: Path, dtype: torch.dtype | None = None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors of a ``.safetensors`` or ``.ckpt``/``.pt`` file (on the CPU) and the safetensors metadata,
    floating-point ones cast to ``dtype`` when given.

    A safetensors file is streamed from its memory map one tensor at a time, each cast as it is read, so a
    float16 file loaded as float32 never holds both copies. Pickled files are read with ``weights_only=True``
    only: a file that needs arbitrary pickled objects is refused, because unpickling runs code from the file."""
    path = Path(path)
    if is_safetensors(path):
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                return {k: aligned(as_dtype(f.get_tensor(k), dtype)) for k in f.keys()}, dict(f.metadata() or {})
        except Exception as error:  # safetensors raises its own error type for a damaged header
            raise CheckpointError(f"{path.name} is not a readable safetensors file ({error})") from None
    loaded = load_pickled_weights(path)
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]  # Lightning-style {"state_dict": ..., "global_step": ...}
    if not isinstance(loaded, dict):
        raise CheckpointError(f"{path.name} holds a {type(loaded).__name__}, not a dictionary of tensors")
    return {k: as_dtype(v, dtype) for k, v in loaded.items() if isinstance(v, torch.Tensor)}, {}
