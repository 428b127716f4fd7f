"""`python -m training.train_toy` and `python -m training.evaluate` work from any folder: the install ships `training`."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_install_includes_the_training_package():
    tomllib = pytest.importorskip("tomllib") if sys.version_info >= (3, 11) else pytest.importorskip("tomli")
    from setuptools import find_packages

    found = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"]["find"]
    packages = find_packages(str(ROOT), include=found["include"])
    assert {"graphflow", "nodes", "training"} <= set(packages)
    assert not any(p == "tests" or p.startswith("tests.") for p in packages)
