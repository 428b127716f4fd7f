"""What the engine tells an output node about its inputs: graphflow.provenance.Provenance on ``ctx.graph``."""
from graphflow.node import Input, node, spec_of
from graphflow.registry import Registry

from . import toynodes
from .conftest import link, wf

SEEN = {}


@node(output=True, category="test")
def Record(value=Input("NUMBER"), *, ctx):
    """Output node keeping what the engine handed it."""
    SEEN["graph"] = ctx.graph
    return {}


@node(outputs={"value": "NUMBER"}, category="test")
def Peek(value=Input("NUMBER"), *, ctx):
    """An ordinary node: it sees only its inputs."""
    SEEN["peek"] = ctx.graph
    return value


def run(engine, document):
    registry = Registry()
    registry.add_module(toynodes)
    registry.add(spec_of(Record))
    registry.add(spec_of(Peek))
    engine.registry = registry
    return engine.run(document)


DOCUMENT = wf(x=("Number", {"value": 2}), y=("Number", {}), add=("Add", {"a": link("x"), "b": link("y")}),
              peek=("Peek", {"value": link("add")}), out=("Record", {"value": link("peek")}),
              other=("Number", {"value": 5}))


def test_an_output_node_sees_its_upstream_nodes_with_resolved_literals_types_and_values(engine):
    run(engine, DOCUMENT)
    graph = SEEN["graph"]
    assert graph.target == "out" and set(graph.nodes) == {"out", "peek", "add", "x", "y"}  # not "other"
    add = graph.nodes["add"]
    assert add.type == "Add" and add.literals == {"bias": 0}  # the default, filled in by validation
    assert graph.nodes["y"].literals == {"value": 0.0}
    assert {name: (s.node, s.output, s.type) for name, s in add.links.items()} == {
        "a": ("x", "value", "NUMBER"), "b": ("y", "value", "NUMBER")}
    assert graph.value("add", "value") == 2.0
    assert [n.id for n in graph.upstream("out")] == ["peek", "add", "x", "y"]  # nearest first
    assert graph.nearest("out", "Number").id == "x"
    assert graph.source("add", "b").id == "y" and graph.source("x", "value") is None
    assert graph.document == DOCUMENT  # the whole workflow as it ran
    assert SEEN["peek"] is None


def test_upstream_can_be_limited_to_one_input_and_to_chosen_links(engine):
    run(engine, DOCUMENT)
    graph = SEEN["graph"]
    assert [n.id for n in graph.upstream("add", "b")] == ["y"]
    only_a = list(graph.upstream("out", follow=lambda below, name, source: name != "b"))
    assert [n.id for n in only_a] == ["peek", "add", "x"]
