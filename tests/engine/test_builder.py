"""The Python builder: typed handles, build-time type checks, lossless JSON round trip, direct runs."""
import pytest

from graphflow import Graph
from graphflow.builder import BuildError


def build(registry):
    g = Graph(registry)
    x = g.add("Number", id="x", value=1.0)
    y = g.add("Number", value=2.0)
    total = g.add("Add", a=x.value, b=y["value"], bias=2)
    words = g.add("Describe", value=total.value, mode="fancy", title="as text")
    g.add("Show", value=words.text, label="result")
    return g


def test_builds_the_same_json_as_a_file(registry):
    doc = build(registry).to_json()
    assert doc["graphflow"] == 1
    assert doc["nodes"]["Add_1"]["inputs"] == {"a": {"from": "x", "output": "value"},
                                               "b": {"from": "Number_1", "output": "value"}, "bias": 2}
    assert doc["nodes"]["Describe_1"]["title"] == "as text"


def test_json_round_trip_is_lossless(registry):
    doc = build(registry).to_json()
    assert Graph.from_json(doc, registry).to_json() == doc


def test_runs_directly(registry, engine):
    report = build(registry).run(engine)
    assert report.outputs["Show_1"] == {"value": "~5.0~", "label": "result"}


def test_wrong_socket_type_fails_at_build_time(registry):
    g = Graph(registry)
    words = g.add("Describe", value=g.add("Number").value)
    with pytest.raises(BuildError, match="expects NUMBER, received TEXT"):
        g.add("Add", a=words.text)


def test_unknown_output_input_and_bad_literal_fail_at_build_time(registry):
    g = Graph(registry)
    n = g.add("Number")
    with pytest.raises(BuildError, match="no output 'colour'"):
        n.colour
    with pytest.raises(BuildError, match="no input 'c'"):
        g.add("Add", a=n.value, c=1)
    with pytest.raises(BuildError, match="bias"):
        g.add("Add", a=n.value, bias=3)
    with pytest.raises(BuildError, match="literal"):
        g.add("Add", a=n.value, bias=n.value)
    with pytest.raises(BuildError, match="already used"):
        g.add("Number", id=n.id)
