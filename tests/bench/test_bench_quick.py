"""bench/run.py keeps working: a smoke run (tiny model, 2 pairs) completes and writes both result files with
every row. Timing figures are not checked here — they belong to the benchmark, not to the test suite."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROW_KEYS = {"id", "name", "value", "unit", "target", "met", "median", "min", "max", "pairs", "detail"}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--out", str(out),
                           "--work", str(out / "work")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return out, done


def test_smoke_run_writes_results_json_with_every_row(smoke_run):
    out, _ = smoke_run
    results = json.loads((out / "results.json").read_text())
    assert {"cpu", "cores", "ram_gib", "python", "torch", "diffusers", "transformers"} <= results["machine"].keys()
    rows = results["rows"]
    assert [r["id"] for r in rows] == list(range(1, 12))
    for r in rows:
        assert ROW_KEYS <= r.keys(), r["id"]
        assert isinstance(r["met"], bool)
        assert r["value"] is None or isinstance(r["value"], (int, float))


def test_smoke_run_writes_results_md_with_the_table_and_the_machine(smoke_run):
    out, done = smoke_run
    text = (out / "RESULTS.md").read_text()
    for number in range(1, 12):
        assert f"\n| {number} | " in text
    for fact in ("CPU:", "torch", "diffusers", "transformers", "command:", "load average"):
        assert fact in text
    assert "| # | measurement |" in done.stdout  # the table is printed too
