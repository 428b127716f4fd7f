"""nodes.checkpoints.reading: safetensors files read tensor by tensor with plain file reads.

The memory side (peak RSS of a full-size load) is measured in bench/load_cost.py; these tests pin what the reader
returns: the file's exact tensors, cast only where asked, in storage of our own."""
import json
import logging
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from nodes import checkpoints as ck
from nodes.checkpoints.reading import read_safetensors

MIXED = {
    "f32": torch.randn(3, 5), "f16": torch.randn(7, 2, 3).half(), "bf16": torch.randn(4).bfloat16(),
    "f64": torch.randn(2, 2, dtype=torch.float64), "e4m3": torch.randn(6).to(torch.float8_e4m3fn),
    "i64": torch.arange(10).reshape(2, 5), "u8": torch.arange(9, dtype=torch.uint8), "flag": torch.tensor([True, False]),
    "scalar": torch.tensor(0.999), "empty": torch.zeros(0, 4), "big": torch.randn(300, 301).half(),
}


@pytest.fixture
def mixed_file(tmp_path):
    path = tmp_path / "mixed.safetensors"
    save_file(MIXED, str(path), metadata={"note": "kept"})
    return path


def test_tensors_equal_the_safetensors_library_bit_for_bit(mixed_file):
    tensors, metadata = ck.read_state_dict(mixed_file)
    expected = load_file(str(mixed_file))
    assert sorted(tensors) == sorted(expected) and metadata == {"note": "kept"}
    for key, tensor in expected.items():
        assert tensors[key].dtype == tensor.dtype and tensors[key].shape == tensor.shape, key
        assert torch.equal(tensors[key].reshape(-1).view(torch.uint8), tensor.reshape(-1).view(torch.uint8)), key


def test_floating_point_tensors_are_cast_and_the_others_kept(mixed_file):
    tensors, _ = ck.read_state_dict(mixed_file, torch.float32)
    for key, tensor in MIXED.items():
        wanted = torch.float32 if tensor.is_floating_point() else tensor.dtype
        assert tensors[key].dtype == wanted, key
        assert torch.equal(tensors[key], tensor.to(wanted)), key


def test_tensors_own_aligned_writable_storage(mixed_file):
    """Not views of a memory map: 64-byte aligned (CPU kernels take the same code paths as for diffusers' own
    loads) and each its own storage (no scratch buffer shared between two cast tensors)."""
    for dtype in (None, torch.float32):
        tensors, _ = ck.read_state_dict(mixed_file, dtype)
        storages = [t.untyped_storage().data_ptr() for t in tensors.values() if t.numel()]
        assert all(t.data_ptr() % 64 == 0 for t in tensors.values() if t.numel())
        assert len(set(storages)) == len(storages)
    tensors["big"].add_(1)  # writable, and the file is untouched
    assert torch.equal(load_file(str(mixed_file))["big"], MIXED["big"])


def write_raw(path, header: dict, data: bytes):
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)
    return path


def test_a_dtype_torch_has_no_type_for_is_named(tmp_path):
    path = write_raw(tmp_path / "f4.safetensors", {"w": {"dtype": "F4", "shape": [4], "data_offsets": [0, 2]}}, b"\0\0")
    with pytest.raises(ck.CheckpointError, match="f4.safetensors: tensor w has the dtype F4, which graphflow does not read"):
        read_safetensors(path)


def test_a_truncated_file_is_refused(mixed_file):
    mixed_file.write_bytes(mixed_file.read_bytes()[:-100])
    with pytest.raises(ck.CheckpointError, match="mixed.safetensors is not a readable safetensors file"):
        ck.read_state_dict(mixed_file)


def test_loading_in_the_stored_dtype_casts_nothing_and_warns_nothing(tiny_components, tmp_path):
    """diffusers' to() warns about "modules that should be kept in float32" on every call with a dtype; a load
    whose weights are already in the asked dtype (cast while reading) must not call it."""
    from nodes.values import Clip, Model, Vae

    path = ck.save_single_file(Model(tiny_components.unet, tiny_components.scheduler_config, "sd1", "epsilon", "tiny"),
                               Clip(tiny_components.tokenizer, tiny_components.text_encoder, "sd1", "tiny"),
                               Vae(tiny_components.vae, "tiny"), tmp_path / "tiny.safetensors")
    # graphflow quiets diffusers (DIFFUSERS_VERBOSITY=error) unless diffusers was imported first, as in a script
    warnings, logger = Collect(), logging.getLogger("diffusers")
    level, logger.level = logger.level, logging.WARNING
    logger.addHandler(warnings)  # diffusers' own handler does not propagate
    try:
        loaded = ck.load_single_file(path, dtype=torch.float16)
    finally:
        logger.removeHandler(warnings)
        logger.setLevel(level)
    assert {p.dtype for m in (loaded.unet, loaded.vae, loaded.text_encoder) for p in m.parameters()} == {torch.float16}
    assert not [text for text in warnings.texts if "kept in float32" in text]


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.texts = []

    def emit(self, record):
        self.texts.append(record.getMessage())
