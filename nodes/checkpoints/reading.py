"""Reading a weights file: safetensors or a PyTorch pickle, the latter only with ``weights_only=True``."""
from __future__ import annotations

import json
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

    A safetensors file is streamed one tensor at a time (see :func:`read_safetensors`), so a float16 file loaded
    as float32 never holds both copies. Pickled files are read with ``weights_only=True`` only: a file that needs
    arbitrary pickled objects is refused, because unpickling runs code from the file."""
    path = Path(path)
    if is_safetensors(path):
        return read_safetensors(path, dtype)
    loaded = load_pickled_weights(path)
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]  # Lightning-style {"state_dict": ..., "global_step": ...}
    if not isinstance(loaded, dict):
        raise CheckpointError(f"{path.name} holds a {type(loaded).__name__}, not a dictionary of tensors")
    return {k: as_dtype(v, dtype) for k, v in loaded.items() if isinstance(v, torch.Tensor)}, {}


# safetensors' dtype names → torch's (the format is little-endian, as every machine torch runs on here); names,
# not torch's objects, so that importing this module does not load torch
SAFETENSORS_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "F8_E8M0": "float8_e8m0fnu",
    "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz", "C64": "complex64",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
}


def read_safetensors(path: Path, dtype: torch.dtype | None = None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A safetensors file read with plain file reads, one tensor at a time, in file order.

    Not through the memory map: every page of a mapped file that is touched counts in the process's resident
    memory until the map is closed, so reading a whole float16 file from its map while casting to float32 peaks
    at 1.5× the loaded weights (measured, bench/load_cost.py). Read into memory we own, the file stays in the
    page cache only. Nor are weights left as views of a map: a file truncated or rewritten in place while its model
    is cached would kill the process (SIGBUS) on the next step. A tensor kept in its stored dtype is read straight
    into its own (aligned) storage; one cast is read into a scratch buffer, reused and as large as the largest
    tensor, and cast into the final tensor."""
    from safetensors import safe_open

    try:  # the library checks the header (offsets within the file, no overlaps, sizes matching shapes)
        with safe_open(str(path), framework="pt", device="cpu") as f:
            keys, metadata = list(f.keys()), dict(f.metadata() or {})
    except Exception as error:  # safetensors raises its own error type for a damaged header
        raise CheckpointError(f"{path.name} is not a readable safetensors file ({error})") from None
    with open(path, "rb") as file:
        header_size = int.from_bytes(file.read(8), "little")
        header = json.loads(file.read(header_size))
        header.pop("__metadata__", None)
        tensors, scratch = {}, torch.empty(0, dtype=torch.uint8)
        for key, entry in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
            stored = getattr(torch, SAFETENSORS_DTYPES.get(entry["dtype"], ""), None)
            if stored is None:
                raise CheckpointError(f"{path.name}: tensor {key} has the dtype {entry['dtype']}, which graphflow "
                                      f"does not read (it reads {', '.join(SAFETENSORS_DTYPES)})")
            begin, end = entry["data_offsets"]
            file.seek(8 + header_size + begin)
            wanted = stored if dtype is None or not stored.is_floating_point or stored == dtype else dtype
            if wanted == stored:
                tensors[key] = read_bytes(file, torch.empty(end - begin, dtype=torch.uint8), path, key).view(stored)
            else:
                if scratch.numel() < end - begin:
                    scratch = torch.empty(end - begin, dtype=torch.uint8)
                raw = read_bytes(file, scratch[:end - begin], path, key).view(stored)
                tensors[key] = torch.empty(raw.shape, dtype=wanted).copy_(raw)
            tensors[key] = tensors[key].reshape(entry["shape"])
    return {key: tensors[key] for key in keys}, metadata


def read_bytes(file, buffer: torch.Tensor, path: Path, key: str) -> torch.Tensor:
    """Fill a flat uint8 tensor from the file's current position; a short read is a truncated file."""
    if buffer.numel() and file.readinto(memoryview(buffer.numpy())) != buffer.numel():
        raise CheckpointError(f"{path.name} is truncated: tensor {key} ends past the end of the file")
    return buffer
