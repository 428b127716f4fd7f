"""``graphflow run --disk-cache DIR`` across processes: a second CLI run of the hires fix with only the second
seed changed takes the whole first pass from disk, and its image is the one a run without any cache draws."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from graphflow import Engine, Settings
from graphflow.cache import ResultCache

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / "workflows" / "hires_fix.json"
FIRST_PASS = ["empty", "negative", "positive", "schedule", "schedule2", "noise", "sample", "upscale"]
SECOND_PASS = ["noise2", "sample2", "decode2", "save2"]
CACHED_LINE = re.compile(r"^\s+(\S+) \(\w+\) cached$", re.MULTILINE)
RAN_LINE = re.compile(r"^\s+(\S+) \(\w+\) [0-9.]+s\s*$", re.MULTILINE)


def cli_run(disk: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "GRAPHFLOW_DISK_CACHE"}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-m", "graphflow", "run", str(WORKFLOW), "--disk-cache", str(disk),
                           "--out", str(out), *extra], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def pixels(folder: Path) -> np.ndarray:
    (path,) = folder.glob("*.png")
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_a_second_process_takes_the_first_pass_from_disk(tmp_path):
    disk = tmp_path / "disk"
    first = cli_run(disk, tmp_path / "one")
    assert CACHED_LINE.findall(first.stderr) == []
    assert any(disk.glob("??/*.safetensors"))

    second = cli_run(disk, tmp_path / "two", "--set", "noise2.seed=44")
    ran = RAN_LINE.findall(second.stderr.replace("\r", "\n"))
    assert sorted(CACHED_LINE.findall(second.stderr)) == sorted(FIRST_PASS)
    assert sorted(ran) == sorted(["ckpt"] + SECOND_PASS)  # the model is loaded again: weights are never stored

    reference = Engine(settings=Settings(models_dir=tmp_path / "models", input_dir=tmp_path / "in",
                                         output_dir=tmp_path / "three"), cache=ResultCache(), disk_cache=None)
    document = json.loads(WORKFLOW.read_text())
    document["nodes"]["noise2"]["inputs"]["seed"] = 44
    reference.run(document)
    np.testing.assert_array_equal(pixels(tmp_path / "two"), pixels(tmp_path / "three"))
