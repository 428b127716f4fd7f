"""bench/gpu_speed.py keeps working: on the CPU at tiny shapes, both sides run in their own processes and draw the
same picture (there is no GPU here; its it/s and memory figures belong to the benchmark, not to the test suite)."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_cpu_run_on_tiny_sd_measures_both_sides_and_their_pictures_agree(tmp_path):
    out = tmp_path / "gpu_speed.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_speed.py"), "--shape", "tiny-sd", "--device", "cpu",
                           "--dtype", "float32", "--size", "64", "--steps", "3", "--runs", "1", "--options", "sdpa",
                           "sliced", "--work", str(tmp_path / "work"), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["shape"], r["option"]) for r in rows] == [("tiny-sd", "sdpa"), ("tiny-sd", "sliced")]
    for r in rows:
        for side in ("graphflow", "diffusers"):
            assert r[side]["it_s"] > 0 and r[side]["peak_gpu_bytes"] is None
        assert r["max_abs_diff"] <= 1e-5
    assert "| tiny-sd 64² float32 | sliced |" in done.stdout
