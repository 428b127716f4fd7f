"""Ctrl-C at the very start of ``graphflow run`` (while its imports run) exits 130 with one line, no traceback."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("networkx", "pydantic", "torch", "diffusers", "transformers", "graphflow.execute", "nodes")


def test_the_entry_point_imports_nothing_heavy_before_main_runs():
    """Until main() runs nothing can catch Ctrl-C, so that stretch must stay tiny: stdlib and small modules only."""
    code = f"import sys, graphflow.cli; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# Each delay lands in another import (the node library, torch, diffusers' lazy modules inside LoadCheckpoint,
# whose import machinery turns the KeyboardInterrupt into a RuntimeError: still a cancel, not a node failure).
@pytest.mark.parametrize("delay", [0.0, 0.4, 1.0])
def test_ctrl_c_while_importing_exits_130_without_a_traceback(tmp_path, delay):
    # -X importtime reports every finished import on stderr: once graphflow.cli is in, main() is about to run and
    # the run's own imports (the node library, torch, diffusers) take seconds more.
    child = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "graphflow", "run",
                              str(ROOT / "workflows" / "txt2img.json"), "--out", str(tmp_path / "out")],
                             cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                             stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        for line in child.stderr:
            if line.rstrip().endswith("| graphflow.cli"):
                break
        time.sleep(delay)
        assert child.poll() is None, "the run finished before it could be interrupted"
        child.send_signal(signal.SIGINT)
        rest = child.stderr.read()
        child.wait(60)
    finally:
        child.kill()
    messages = [line for line in rest.splitlines() if not line.startswith("import time:")]
    assert child.returncode == 130, rest
    assert "Traceback" not in rest and "KeyboardInterrupt" not in rest
    assert [m for m in messages if m.strip()] == ["cancelled"]
    assert not list(tmp_path.rglob("*.png"))
