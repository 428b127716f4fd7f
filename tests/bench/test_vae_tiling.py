"""bench/vae_tiling.py keeps working: a tiny run of its fresh-process decodes writes both kinds' figures."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_tiny_run_measures_tiled_and_untiled_decodes_in_pairs(tmp_path):
    out = tmp_path / "vae_tiling.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "vae_tiling.py"), "--size", "128", "--channels", "8",
                           "16", "32", "32", "--tile", "64", "--overlap", "16", "--pairs", "1", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    for kind in ("untiled", "tiled"):
        assert [r["shape"] for r in result["runs"][kind]] == [[1, 128, 128, 3]]
        assert result[kind]["peak_above"]["median"] > 0
    assert result["time_ratio"]["n"] == result["peak_ratio"]["n"] == 1
    assert "| tiled / untiled |" in done.stdout
