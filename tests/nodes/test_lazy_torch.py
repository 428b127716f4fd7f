"""Discovering the node library does not import torch (most of a second): `graphflow validate` and `graphflow
nodes` run without it, and the first real use of torch loads it for every node module at once. A node module
that touches torch at import time (a module-level constant, a default, an unquoted annotation in a module
without ``from __future__ import annotations``) fails the first test."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def in_fresh_process(code: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("command", [["validate", "workflows/hires_fix.json"], ["nodes"], ["nodes", "--json"]])
def test_the_cli_validates_and_lists_nodes_without_importing_torch(command):
    answer = in_fresh_process(
        "import contextlib, io, json, sys\n"
        "from graphflow.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    code = main({command!r})\n"
        "print(json.dumps({'code': code, 'torch': 'torch._C' in sys.modules}))")
    assert answer == {"code": 0, "torch": False}


def test_the_first_use_of_torch_loads_the_real_module_for_every_node_module():
    answer = in_fresh_process(
        "import json, sys\n"
        "from graphflow.registry import default_registry\n"
        "default_registry()\n"
        "import nodes.values, nodes.latent\n"
        "stand_in = nodes.values.torch\n"
        "zeros = nodes.latent.torch.zeros(2)\n"
        "import torch\n"
        "torch.graphflow_probe = 'set on the real module later'\n"
        "print(json.dumps({'real_in_sys_modules': sys.modules['torch'] is torch and 'torch._C' in sys.modules,\n"
        "                  'sees_later_changes': stand_in.graphflow_probe == 'set on the real module later',\n"
        "                  'same_tensor_class': stand_in.Tensor is torch.Tensor and isinstance(zeros, torch.Tensor),\n"
        "                  'functional': nodes.latent.F.interpolate is torch.nn.functional.interpolate}))")
    assert answer == {"real_in_sys_modules": True, "sees_later_changes": True, "same_tensor_class": True,
                      "functional": True}


def test_a_submodule_import_as_the_first_use_of_torch_works():
    # diffusers' first line touching torch is `from torch.fft import ...`: the real torch's own start imports
    # torch.fft too, which must not run a second time (torch refuses: "function 'fft_fft' already has a docstring")
    answer = in_fresh_process(
        "import json, sys\n"
        "import nodes\n"
        "from torch.fft import fftn\n"
        "import torch\n"
        "print(json.dumps({'same': torch.fft.fftn is fftn, 'real': type(sys.modules['torch']).__name__}))")
    assert answer == {"same": True, "real": "module"}
