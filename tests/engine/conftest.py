import pytest

from graphflow import Engine, Settings
from graphflow.cache import ResultCache
from graphflow.registry import Registry

from . import toynodes


@pytest.fixture
def registry() -> Registry:
    reg = Registry()
    reg.add_module(toynodes)
    return reg


@pytest.fixture
def calls():
    toynodes.CALLS.clear()
    return toynodes.CALLS


@pytest.fixture
def engine(registry, tmp_path, calls) -> Engine:
    settings = Settings(models_dir=tmp_path / "models", input_dir=tmp_path / "in", output_dir=tmp_path / "out")
    settings.input_dir.mkdir()
    return Engine(registry, settings, ResultCache(value_budget=10**8), check_mutations=True)


def link(node: str, output: str = "value") -> dict:
    return {"from": node, "output": output}


def wf(**nodes) -> dict:
    """Shorthand: wf(a=("Number", {"value": 1})) → workflow document."""
    return {"graphflow": 1, "nodes": {k: {"type": t, "inputs": i} for k, (t, i) in nodes.items()}}


def chain(x: float = 1.0, y: float = 2.0, bias: int = 0, label: str = "") -> dict:
    return wf(
        x=("Number", {"value": x}),
        y=("Number", {"value": y}),
        sum=("Add", {"a": link("x"), "b": link("y"), "bias": bias}),
        desc=("Describe", {"value": link("sum")}),
        show=("Show", {"value": link("desc", "text"), "label": label}),
    )
