"""Validation collects every problem at once, each naming node, input, expected and received."""
import pytest

from graphflow import WorkflowFormatError, WorkflowInvalid
from graphflow.workflow import parse_text

from .conftest import chain, link, wf


def issues_of(engine, doc, outputs=None):
    with pytest.raises(WorkflowInvalid) as err:
        engine.validate(doc, outputs)
    return err.value.issues


def only(issues):
    assert len(issues) == 1, issues
    return issues[0]


def test_valid_workflow_passes(engine):
    checked = engine.validate(chain())
    assert checked.outputs == ("show",)
    assert checked.nodes["sum"].literals == {"bias": 0}


def test_unknown_node_type_suggests_close_names(engine):
    doc = chain()
    doc["nodes"]["sum"]["type"] = "Ad"
    issue = only(issues_of(engine, doc))
    assert (issue.node, issue.received) == ("sum", "Ad") and "Add" in issue.message
    assert issue.code == "unknown_node_type"


def test_unknown_input_name(engine):
    doc = chain()
    doc["nodes"]["x"]["inputs"]["valu"] = 3
    issue = only(issues_of(engine, doc))
    assert (issue.node, issue.input, issue.received, issue.code) == ("x", "valu", "valu", "unknown_input")


def test_missing_required_socket(engine):
    doc = chain()
    del doc["nodes"]["sum"]["inputs"]["a"]
    issue = only(issues_of(engine, doc))
    assert (issue.node, issue.input, issue.message) == ("sum", "a", "missing required input")
    assert "NUMBER" in issue.expected and issue.code == "missing_input"


def test_missing_required_literal(engine):
    doc = wf(r=("ReadNumber", {}), s=("Show", {"value": link("r")}))
    issue = only(issues_of(engine, doc))
    assert (issue.node, issue.input) == ("r", "name") and "required" in issue.message.lower()
    assert issue.code == "missing_input"


def test_link_to_missing_node_and_missing_output(engine):
    doc = chain()
    doc["nodes"]["sum"]["inputs"]["a"] = link("nowhere")
    doc["nodes"]["show"]["inputs"]["value"] = link("desc", "colour")
    found = {(i.node, i.input): i for i in issues_of(engine, doc)}
    assert found[("sum", "a")].received == "nowhere"
    assert found[("show", "value")].received == "colour" and "text" in found[("show", "value")].expected
    assert {i.code for i in found.values()} == {"missing_link"}


def test_socket_type_mismatch(engine):
    doc = chain()
    doc["nodes"]["words"] = {"type": "Describe", "inputs": {"value": link("x")}}
    doc["nodes"]["sum"]["inputs"]["b"] = link("words", "text")
    issue = only(issues_of(engine, doc))
    assert (issue.node, issue.input, issue.expected, issue.received) == ("sum", "b", "NUMBER", "TEXT")
    assert issue.code == "type_mismatch"


def test_literal_out_of_bounds_wrong_type_and_enum(engine):
    doc = chain()
    doc["nodes"]["x"]["inputs"]["value"] = 5000
    doc["nodes"]["y"]["inputs"]["value"] = "two"
    doc["nodes"]["sum"]["inputs"]["bias"] = 3
    doc["nodes"]["desc"]["inputs"]["mode"] = "loud"
    found = {(i.node, i.input): i for i in issues_of(engine, doc)}
    assert set(found) == {("x", "value"), ("y", "value"), ("sum", "bias"), ("desc", "mode")}
    assert found[("x", "value")].received == 5000 and "<= 1000" in found[("x", "value")].expected
    assert found[("y", "value")].received == "two"
    assert "multiple of 2" in found[("sum", "bias")].expected
    assert "plain" in found[("desc", "mode")].expected
    assert {i.code for i in found.values()} == {"bad_value"}


def test_literal_given_to_socket_and_link_given_to_literal(engine):
    doc = chain()
    doc["nodes"]["sum"]["inputs"]["a"] = 1.0
    doc["nodes"]["x"]["inputs"]["value"] = link("y")
    found = {(i.node, i.input): i.code for i in issues_of(engine, doc)}
    assert found == {("sum", "a"): "wrong_input_kind", ("x", "value"): "wrong_input_kind"}


def test_cycle_is_named(engine):
    doc = wf(
        a=("Add", {"a": link("c")}),
        b=("Add", {"a": link("a")}),
        c=("Add", {"a": link("b")}),
        s=("Show", {"value": link("c")}),
    )
    issue = only(issues_of(engine, doc))
    assert issue.message.startswith("cycle: ") and issue.code == "cycle"
    for name in "abc":
        assert name in issue.message


def test_self_loop_is_a_cycle(engine):
    doc = wf(a=("Add", {"a": link("a")}), s=("Show", {"value": link("a")}))
    assert "cycle: a → a" in only(issues_of(engine, doc)).message


def test_no_output_node(engine):
    doc = wf(x=("Number", {"value": 1.0}))
    issue = only(issues_of(engine, doc))
    assert issue.node is None and "no output node" in issue.message and issue.code == "no_output"


def test_requested_output_must_be_an_output_node(engine):
    issue = only(issues_of(engine, chain(), outputs=["sum"]))
    assert (issue.node, issue.code) == ("sum", "not_an_output")
    assert only(issues_of(engine, chain(), outputs=["nowhere"])).code == "not_an_output"
    assert only(issues_of(engine, chain(), outputs=[])).code == "no_output"


def test_a_workflow_of_unknown_types_is_not_also_told_it_has_no_output(engine):
    issue = only(issues_of(engine, wf(x=("Nope", {}))))
    assert issue.code == "unknown_node_type"


def test_all_errors_at_once(engine):
    doc = chain()
    doc["nodes"]["x"]["inputs"]["value"] = "a"
    doc["nodes"]["sum"]["type"] = "Nope"
    doc["nodes"]["desc"]["inputs"]["extra"] = 1
    assert len(issues_of(engine, doc)) == 3


def test_nothing_runs_when_invalid(engine, calls):
    doc = chain()
    doc["nodes"]["x"]["inputs"]["value"] = "a"
    with pytest.raises(WorkflowInvalid):
        engine.run(doc)
    assert sum(calls.values()) == 0


def test_malformed_json_gives_line_and_column():
    with pytest.raises(WorkflowFormatError) as err:
        parse_text('{"graphflow": 1,\n "nodes": {,}}', "w.json")
    message = str(err.value)
    assert "line 2, column 12" in message and "\n" not in message


def test_wrong_document_shape():
    with pytest.raises(WorkflowFormatError) as err:
        parse_text('{"graphflow": 2, "nodes": []}')
    assert "graphflow" in str(err.value) and "nodes" in str(err.value)


def test_issues_group_by_node_for_apis(engine):
    doc = chain()
    doc["nodes"]["x"]["inputs"]["value"] = "a"
    with pytest.raises(WorkflowInvalid) as err:
        engine.validate(doc)
    grouped = err.value.by_node()
    assert list(grouped) == ["x"]
    assert set(grouped["x"][0]) == {"input", "message", "expected", "received", "code"}
    assert grouped["x"][0]["code"] == "bad_value"
