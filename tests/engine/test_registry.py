"""Node declaration, discovery and the catalog."""
import pytest

from graphflow.node import Input, node
from graphflow.registry import NodePack, Registry, catalog_entry, discover

from . import toynodes


def test_catalog_lists_inputs_outputs_defaults_bounds_and_schema(registry):
    entry = registry.catalog()["Add"]
    assert entry["inputs"]["a"] == {"kind": "socket", "type": "NUMBER", "required": True, "description": ""}
    assert entry["inputs"]["b"]["required"] is False
    bias = entry["inputs"]["bias"]
    assert bias["default"] == 0 and bias["schema"]["maximum"] == 10 and bias["schema"]["multipleOf"] == 2
    assert entry["outputs"] == {"value": "NUMBER"}
    assert entry["schema"]["properties"]["bias"]["minimum"] == 0
    assert entry["description"] == "a + b + bias."
    assert registry.catalog()["Describe"]["inputs"]["mode"]["schema"]["enum"] == ["plain", "fancy"]


def test_discovery_through_environment_selection(monkeypatch):
    monkeypatch.setenv("GRAPHFLOW_NODES", "tests.engine.toynodes")
    assert "Add" in discover() and "Show" in discover()


def test_two_types_with_one_name_are_refused():
    @node("Number", outputs={"value": "NUMBER"})
    def other():
        return 1

    registry = Registry()
    registry.add_module(toynodes)
    with pytest.raises(ValueError, match="two node types are named 'Number'"):
        registry.add(other.__graphflow_node__)


def test_declaration_mistakes_are_caught_early():
    with pytest.raises(TypeError):
        node(outputs={})(lambda: 1)
    with pytest.raises(ValueError):
        node(outputs={"x": "lower"})(lambda: 1)
    with pytest.raises(ValueError):
        Input("latent")

    def sized(v=Input("NUMBER"), width: int = 1):
        return v

    with pytest.raises(TypeError, match="not literal inputs"):  # a pixel count is made of literal inputs
        node(outputs={"x": "NUMBER"}, pixels=("width", "v"))(sized)
    assert node(outputs={"x": "NUMBER"}, pixels=("width",))(sized).__graphflow_node__.pixels == ("width",)


def test_a_module_declares_its_pack(monkeypatch):
    import types
    pack = types.ModuleType("pack")
    pack.GRAPHFLOW_PACK = NodePack(literal_limits={"count": 5}, output_example="Show")
    registry = Registry()
    registry.add_module(pack)
    registry.add_module(toynodes)  # declares nothing: the pack's declarations stay
    assert (registry.literal_limits, registry.output_example) == ({"count": 5}, "Show")


@pytest.mark.parametrize("declaration", ["def n(ctx=None): return 1", "def n(ctx): return 1", "def n(*, ctx=None): return 1"])
def test_the_run_context_is_taken_one_way(declaration):
    scope: dict = {}
    exec(declaration, scope)
    with pytest.raises(TypeError, match=r"\*, ctx: RunContext"):
        node(outputs={"x": "NUMBER"})(scope["n"])
    assert node(outputs={"x": "NUMBER"})(lambda *, ctx: 1).__graphflow_node__.wants_context


def test_version_is_part_of_the_key(registry, engine):
    from graphflow.plan import make_plan
    from .conftest import chain

    before = make_plan(engine.validate(chain()), engine.settings).keys["sum"]
    spec = registry.get("Add")
    registry._specs["Add"] = type(spec)(**{**spec.__dict__, "version": 2})
    after = make_plan(engine.validate(chain()), engine.settings).keys["sum"]
    assert before != after


def test_catalog_entry_reports_output_nodes():
    assert catalog_entry(toynodes.Show.__graphflow_node__)["output_node"] is True
