"""Execution: order, content-addressed caching, shared prefixes, fingerprints, budget, cancellation, failures."""
import threading

import pytest

from graphflow import CancelToken, Cancelled, Engine, NodeFailed, Settings
from graphflow.cache import ResultCache, sizeof
from graphflow.events import NodeCached, NodeFinished, NodeStarted, Progress, RunCancelled, RunFailed, RunSucceeded

from . import toynodes
from .conftest import chain, link, wf


def test_runs_needed_nodes_in_dependency_order(engine):
    doc = chain()
    doc["nodes"]["unused"] = {"type": "Number", "inputs": {"value": 9}}
    report = engine.run(doc)
    assert report.executed == ["x", "y", "sum", "desc", "show"]
    assert report.outputs == {"show": {"value": "3.0", "label": ""}}
    assert set(report.timings) == set(report.executed)


def test_identical_rerun_executes_nothing(engine, calls):
    engine.run(chain())
    calls.clear()
    report = engine.run(chain())
    assert report.executed == [] and sum(calls.values()) == 0
    assert report.cached == ["x", "y", "sum", "desc", "show"]
    assert report.outputs == {"show": {"value": "3.0", "label": ""}}


def test_changing_one_literal_reruns_only_that_node_and_descendants(engine):
    engine.run(chain())
    report = engine.run(chain(y=5.0))
    assert report.executed == ["y", "sum", "desc", "show"]
    assert report.cached == ["x"]
    report = engine.run(chain(y=5.0, label="new"))
    assert report.executed == ["show"]


def test_cache_key_ignores_node_ids(engine):
    """A second workflow sharing a prefix with the first reuses it, whatever its node ids."""
    engine.run(chain())
    other = wf(
        a=("Number", {"value": 1.0}),
        b=("Number", {"value": 2.0}),
        total=("Add", {"a": link("a"), "b": link("b")}),
        double=("Add", {"a": link("total"), "b": link("total")}),
        out=("Show", {"value": link("double")}),
    )
    report = engine.run(other)
    assert report.cached == ["a", "b", "total"]
    assert report.executed == ["double", "out"]


def test_default_literals_and_explicit_defaults_share_a_key(engine):
    engine.run(wf(n=("Number", {}), s=("Show", {"value": link("n")})))
    report = engine.run(wf(n=("Number", {"value": 0.0}), s=("Show", {"value": link("n")})))
    assert report.executed == []


def test_a_neutral_input_reruns_its_node_but_not_what_links_to_it(engine):
    """A neutral input (how a loader computes, not what) keys the node's own result, not the keys downstream."""
    def halved(method: str) -> dict:
        return wf(n=("Number", {"value": 3.0}), half=("Halve", {"value": link("n"), "method": method}),
                  total=("Add", {"a": link("half"), "bias": 2}), out=("Show", {"value": link("total")}))

    engine.run(halved("multiply"))
    report = engine.run(halved("divide"))
    assert report.executed == ["half"]
    assert report.cached == ["n", "total", "out"]
    assert report.outputs == {"out": {"value": 3.5, "label": ""}}


def test_neutral_must_name_a_literal_input():
    from graphflow.node import node

    with pytest.raises(TypeError, match="neutral= names \\['missing'\\]"):
        node(outputs={"value": "NUMBER"}, neutral=("missing",))(lambda value=0.0: value)


def test_new_engine_process_recomputes_the_same_keys(registry, engine):
    from graphflow.plan import make_plan

    first = make_plan(engine.validate(chain()), engine.settings).keys
    second = make_plan(Engine(registry, engine.settings).validate(chain()), engine.settings).keys
    assert first == second


def test_fingerprint_invalidates_when_the_file_changes(engine):
    path = engine.settings.input_dir / "n.txt"
    path.write_text("4")
    doc = wf(r=("ReadNumber", {"name": "n.txt"}), s=("Show", {"value": link("r")}))
    assert engine.run(doc).outputs["s"]["value"] == 4.0
    assert engine.run(doc).executed == []
    path.write_text("7")
    report = engine.run(doc)
    assert report.executed == ["r", "s"] and report.outputs["s"]["value"] == 7.0


def test_missing_fingerprinted_file_is_a_node_error(engine):
    doc = wf(r=("ReadNumber", {"name": "absent.txt"}), s=("Show", {"value": link("r")}))
    with pytest.raises(NodeFailed) as err:
        engine.run(doc)
    assert err.value.node == "r" and err.value.node_type == "ReadNumber"


def test_never_cached_node_reruns_with_its_descendants(engine):
    doc = wf(c=("Clock", {}), d=("Describe", {"value": link("c")}), s=("Show", {"value": link("d", "text")}))
    engine.run(doc)
    assert engine.run(doc).executed == ["c", "d", "s"]


def test_value_budget_evicts_least_recently_used(registry, calls, tmp_path):
    one_list = sizeof(([1.0] * 20_000,))
    budget = int(2.5 * one_list)  # room for two lists and the small values
    engine = Engine(registry, Settings(input_dir=tmp_path), ResultCache(value_budget=budget))

    def big(value):
        return wf(n=("Number", {"value": value}), l=("MakeList", {"value": link("n"), "length": 20_000}),
                  s=("Show", {"value": link("l", "items")}))

    for value in (1.0, 2.0, 3.0):
        engine.run(big(value))
    assert engine.cache.value_bytes <= budget
    assert "l" in engine.run(big(1.0)).executed  # evicted: oldest
    assert "l" in engine.run(big(3.0)).cached  # kept: recent


def test_value_larger_than_budget_is_not_kept(registry, calls, tmp_path):
    engine = Engine(registry, Settings(input_dir=tmp_path), ResultCache(value_budget=1000))
    doc = wf(n=("Number", {"value": 1.0}), l=("MakeList", {"value": link("n"), "length": 10_000}),
             s=("Show", {"value": link("l", "items")}))
    engine.run(doc)
    assert "l" in engine.run(doc).executed
    assert engine.cache.value_bytes <= 1000


def test_events_are_emitted_in_order(engine):
    events = []
    engine.run(chain(), on_event=events.append)
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "NodeStarted" and kinds[-1] == "RunSucceeded"
    assert kinds.count("NodeFinished") == 5
    events.clear()
    engine.run(chain(), on_event=events.append)
    assert [type(e) for e in events] == [NodeCached] * 5 + [RunSucceeded]


def test_progress_events_come_from_inside_long_nodes(engine):
    events = []
    doc = wf(n=("Number", {"value": 1.0}), slow=("Slow", {"value": link("n"), "steps": 4}), s=("Show", {"value": link("slow")}))
    engine.run(doc, on_event=events.append)
    progress = [(e.value, e.max) for e in events if isinstance(e, Progress)]
    assert progress == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_cancel_mid_run_stops_and_leaves_cache_consistent(engine, monkeypatch):
    token = CancelToken()
    monkeypatch.setattr(toynodes, "ON_STEP", lambda i: token.cancel() if i == 2 else None)
    doc = wf(n=("Number", {"value": 1.0}), slow=("Slow", {"value": link("n"), "steps": 10}), s=("Show", {"value": link("slow")}))
    events = []
    with pytest.raises(Cancelled) as err:
        engine.run(doc, cancel=token, on_event=events.append)
    assert err.value.node == "slow"
    assert err.value.report.executed == ["n"]
    assert isinstance(events[-1], RunCancelled)
    monkeypatch.setattr(toynodes, "ON_STEP", lambda i: None)
    report = engine.run(doc)
    assert report.cached == ["n"] and report.executed == ["slow", "s"]


def test_cancel_from_another_thread(engine, monkeypatch):
    token = CancelToken()
    reached = threading.Event()
    monkeypatch.setattr(toynodes, "ON_STEP", lambda i: (reached.set(), __import__("time").sleep(0.01)))
    doc = wf(n=("Number", {"value": 1.0}), slow=("Slow", {"value": link("n"), "steps": 10_000}), s=("Show", {"value": link("slow")}))
    threading.Thread(target=lambda: (reached.wait(5), token.cancel())).start()
    with pytest.raises(Cancelled):
        engine.run(doc, cancel=token)


def test_failing_node_names_itself_and_engine_stays_usable(engine):
    doc = wf(n=("Number", {"value": 1.0}), f=("Fail", {"value": link("n")}), s=("Show", {"value": link("f")}))
    events = []
    with pytest.raises(NodeFailed) as err:
        engine.run(doc, on_event=events.append)
    assert (err.value.node, err.value.node_type, err.value.error_type) == ("f", "Fail", "ValueError")
    assert "boom" in str(err.value)
    assert isinstance(events[-1], RunFailed) and events[-1].error["node"] == "f"
    doc["nodes"]["f"]["inputs"]["when"] = "never"
    report = engine.run(doc)
    assert report.cached == ["n"] and report.outputs["s"]["value"] == 1.0


def test_node_input_error_names_the_input(engine):
    doc = wf(n=("Number", {"value": 1.0}), f=("Fail", {"value": link("n"), "when": "input"}), s=("Show", {"value": link("f")}))
    with pytest.raises(NodeFailed) as err:
        engine.run(doc)
    assert err.value.input == "when" and "expected never" in err.value.message


def test_mutating_an_input_is_caught(engine):
    doc = wf(n=("Number", {"value": 1.0}), l=("MakeList", {"value": link("n")}),
             bad=("AppendInPlace", {"items": link("l", "items")}), s=("Show", {"value": link("bad", "items")}))
    with pytest.raises(NodeFailed) as err:
        engine.run(doc)
    assert err.value.node == "bad" and err.value.error_type == "MutatedInput"


def test_unlinked_optional_socket_arrives_as_none(engine):
    doc = wf(x=("Number", {"value": 2.0}), sum=("Add", {"a": link("x")}), s=("Show", {"value": link("sum")}))
    assert engine.run(doc).outputs["s"]["value"] == 2.0


def test_only_requested_outputs_run(engine):
    doc = chain()
    doc["nodes"]["other"] = {"type": "Show", "inputs": {"value": link("x")}}
    report = engine.run(doc, outputs=["other"])
    assert report.executed == ["x", "other"]


def test_output_files_are_typed_and_reported_grouped_by_kind(engine):
    from graphflow.outputs import OutputFile

    report = engine.run(wf(x=("Number", {"value": 2}), note=("WriteNote", {"value": link("x")}),
                           show=("Show", {"value": link("x")})))
    assert report.files == {"note": [OutputFile("note", "notes/note.txt", {"bytes": 4})], "show": []}
    assert report.outputs["note"] == {"notes": [{"filename": "notes/note.txt", "bytes": 4}]}
    assert report.outputs["show"] == {"value": 2.0, "label": ""}  # a result that is no file, as returned


@pytest.mark.parametrize("name", ["/etc/passwd", "../up.txt", "C:/x.txt"])
def test_an_output_file_is_named_inside_the_output_folder(name):
    from graphflow.outputs import OutputFile

    with pytest.raises(ValueError, match="relative to the output folder"):
        OutputFile("note", name)
