"""bench/load_cost.py keeps working at the tiny shapes: the file it streams to disk is a valid single file of the
published layout that graphflow loads, and its table renders every measured shape. The full-size rows are run by
hand (they need gigabytes); their numbers are not checked here."""
import torch
from safetensors import safe_open

from bench import load_cost
from nodes import checkpoints as ck


def test_the_streamed_file_is_the_tiny_models_layout_in_float16(tmp_path):
    from nodes.builtin_models import tiny_sd_folder
    from nodes.values import Clip, Model, Vae

    tiny_components = ck.load_diffusers_folder(tiny_sd_folder())
    path = load_cost.write_file("tiny-sd", tmp_path)
    expected = ck.original_state_dict(Model(tiny_components.unet, {}, "sd1", "epsilon", "tiny"),
                                      Clip(None, tiny_components.text_encoder, "sd1", "tiny"), Vae(tiny_components.vae, "tiny"))
    with safe_open(str(path), framework="pt") as f:
        assert sorted(f.keys()) == sorted(expected)
        assert all(f.get_slice(k).get_shape() == list(v.shape) and f.get_slice(k).get_dtype() == "F16"
                   for k, v in expected.items())
    loaded = ck.load_single_file(path, dtype=torch.float32)
    assert loaded.family == "sd1" and loaded.unet.dtype == torch.float32
    assert load_cost.write_file("tiny-sd", tmp_path) == path  # written once, then reused


def test_the_table_has_a_row_per_shape_with_its_dtype():
    side = {"seconds": 2.0, "min_seconds": 1.5, "max_seconds": 2.5, "peak_over_weights": 1.04, "weights_gb": 4.07,
            "ready_seconds": 2.5, "ready_peak_over_weights": 1.05}
    row = {"graphflow": side, "diffusers": {**side, "seconds": 4.0, "peak_over_weights": 1.51}, "time_ratio": 0.5,
           "ready_ratio": 0.62,
           "file_gb": 2.13, "dtype": "float32", "pairs": 3, "date": "2026-12-01T17:00:00+0000",
           "load_average_start": [1.0, 1.0, 1.0]}
    table = load_cost.markdown({"sd1": row, "sdxl": {**row, "dtype": "float16"}})
    lines = table.splitlines()
    assert len(lines) == 4 and lines[2].startswith("| sd1 | 2.13 GB | float32 |") and "| float16 |" in lines[3]
    assert "| 0.50 | 1.040 | 1.510 | 2.50 s / 2.50 s (0.62; 1.050 / 1.050) |" in lines[2]
