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
    assert set(grouped["x"][0]) == {"input", "message", "expected", "received", "code", "node_type"}
    assert grouped["x"][0]["code"] == "bad_value" and grouped["x"][0]["node_type"] == "Number"


def test_messages_name_the_node_type(engine):
    doc = chain()
    doc["nodes"]["x"]["inputs"]["value"] = "a"
    with pytest.raises(WorkflowInvalid, match=r"x\.value: .* \[Number\]"):
        engine.validate(doc)



# --- preflight: named files checked before anything runs ---------------------------------------------------------

def files_doc(a="a.txt", b="b.txt"):
    return wf(a=("LoadNumber", {"name": a}), b=("LoadNumber", {"name": b}),
              sum=("Add", {"a": link("a"), "b": link("b")}), s=("Show", {"value": link("sum")}))


def test_every_missing_file_is_reported_at_once_with_the_nearest_names_first(engine, calls):
    for name in ("alpha.txt", "apple.txt", "zeta.txt"):
        (engine.settings.input_dir / name).write_text("1")
    doc = files_doc("alpah.txt", "zeta.tx")
    doc["nodes"]["sum"]["inputs"]["bias"] = 3  # a bad literal elsewhere does not hide the missing files
    issues = issues_of(engine, doc)
    missing = {i.node: i for i in issues if i.input == "name"}
    assert set(missing) == {"a", "b"} and any(i.node == "sum" and i.input == "bias" for i in issues)
    assert missing["a"].received == "alpah.txt" and missing["a"].expected[0] == "alpha.txt"
    assert "did you mean 'alpha.txt'" in missing["a"].message
    assert missing["b"].expected[0] == "zeta.txt"
    assert missing["a"].code == missing["b"].code == "missing_file"
    with pytest.raises(WorkflowInvalid):
        engine.run(doc)
    assert calls["LoadNumber"] == 0


def test_files_that_exist_pass_and_the_node_runs(engine, calls):
    for name in ("a.txt", "b.txt"):
        (engine.settings.input_dir / name).write_text("2")
    assert engine.run(files_doc()).outputs["s"]["value"] == 4.0
    assert calls["LoadNumber"] == 2


def test_a_node_not_needed_for_the_requested_outputs_is_not_checked(engine):
    doc = files_doc("absent.txt", "absent.txt")
    doc["nodes"].update(wf(n=("Number", {"value": 1.0}), other=("Show", {"value": link("n")}))["nodes"])
    assert engine.validate(doc, outputs=["other"]).outputs == ("other",)
    assert {i.node for i in issues_of(engine, doc)} == {"a", "b"}


def test_a_name_leaving_its_folder_says_what_was_expected(engine):
    (engine.settings.input_dir / "b.txt").write_text("1")
    issue = only(issues_of(engine, files_doc("../secret.txt")))
    assert (issue.node, issue.input, issue.expected) == ("a", "name", "a name inside the input folder")
    assert issue.code == "bad_value"


def test_validation_without_settings_checks_no_files(registry):
    from graphflow.validate import validate
    from graphflow.workflow import parse

    assert set(validate(parse(files_doc("absent.txt")), registry).nodes) == {"a", "b", "sum", "s"}


def test_short_list_puts_the_nearest_first_and_says_how_many_more():
    from graphflow.validate import short_list

    names = [f"n{i}" for i in range(20)]
    assert short_list(["n7"], names, limit=4) == ["n7", "n0", "n1", "n2", "... 16 more"]
    assert short_list([], ["a", "b"]) == ["a", "b"]


def test_a_preflight_that_raises_is_an_issue_not_a_traceback(registry, engine):
    from graphflow.node import node, spec_of

    def broken(literals, settings):
        raise KeyError("name")

    @node(outputs={"value": "NUMBER"}, category="test", preflight=broken)
    def Fragile(name: str = "x"):
        return 1.0

    registry.add(spec_of(Fragile))
    issue = only(issues_of(engine, wf(f=("Fragile", {}), s=("Show", {"value": link("f")}))))
    assert issue.node == "f" and "could not check the files" in issue.message and "KeyError" in issue.message
