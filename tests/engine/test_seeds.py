"""Seed inputs: -1 / "random" draw a seed when the run starts; the drawn seed is what the cache key, the report,
the events and the workflow document see; offset_seeds gives A1111's "Batch count" seeds."""
import pytest

from graphflow import WorkflowInvalid
from graphflow.events import NodeStarted, SeedsUsed
from graphflow.seeds import DRAWN_BELOW, draw_seeds, offset_seeds
from graphflow.workflow import parse

from .conftest import link, wf


def seeded(seed=0, **inputs):
    return wf(n=("Seeded", {"seed": seed, **inputs}), s=("Show", {"value": link("n")}))


@pytest.mark.parametrize("random", [-1, "random"])
def test_a_random_seed_is_drawn_per_run_and_reported(engine, calls, random):
    first, second = engine.run(seeded(random)), engine.run(seeded(random))
    drawn = [report.seeds["n"]["seed"] for report in (first, second)]
    assert all(0 <= seed < DRAWN_BELOW for seed in drawn) and drawn[0] != drawn[1]
    assert [report.outputs["s"]["value"] for report in (first, second)] == drawn
    assert second.executed == ["n", "s"] and calls["Seeded"] == 2  # a new seed is a new cache key


def test_a_fixed_seed_is_reported_and_cached(engine, calls):
    first, second = engine.run(seeded(5)), engine.run(seeded(5))
    assert first.seeds == second.seeds == {"n": {"seed": 5}}  # then=-1 seeds nothing of its own
    assert second.cached == ["n", "s"] and calls["Seeded"] == 1
    assert first.to_json()["seeds"] == {"n": {"seed": 5}}


def test_the_drawn_seed_is_the_cache_key_so_that_seed_given_back_hits_the_cache(engine, calls):
    drawn = engine.run(seeded("random")).seeds["n"]["seed"]
    assert engine.run(seeded(drawn)).cached == ["n", "s"] and calls["Seeded"] == 1


def test_the_seeds_event_comes_before_the_first_node(engine):
    events = []
    report = engine.run(seeded(-1), on_event=events.append)
    kinds = [type(e) for e in events]
    assert kinds.index(SeedsUsed) < kinds.index(NodeStarted)
    [used] = [e for e in events if isinstance(e, SeedsUsed)]
    assert used.seeds == report.seeds and used.to_json()["type"] == "seeds"


def test_drawn_seeds_replace_the_literals_and_the_workflow_document(engine):
    checked, used = draw_seeds(engine.validate(seeded(-1, then="random")), draw=lambda below: 1234)
    assert checked.nodes["n"].literals == {"seed": 1234, "offset": 0, "then": 1234}
    assert checked.workflow.to_json()["nodes"]["n"]["inputs"]["seed"] == 1234
    assert used == {"n": {"seed": 1234, "then": 1234}}
    unchanged, _ = draw_seeds(engine.validate(seeded(3)), draw=lambda below: pytest.fail("drew a fixed seed"))
    assert unchanged.nodes["n"].literals["seed"] == 3


def test_a_bad_seed_is_one_issue_saying_what_a_seed_takes(engine):
    with pytest.raises(WorkflowInvalid) as err:
        engine.validate(seeded("rnd"))
    [issue] = err.value.issues
    assert (issue.node, issue.input, issue.received) == ("n", "seed", "rnd")
    assert "-1 or 'random'" in issue.message and "18446744073709551615" in issue.message


def test_offset_seeds_steps_fixed_seeds_and_leaves_random_ones(registry):
    doc = wf(a=("Seeded", {"seed": 10}), b=("Seeded", {}), c=("Seeded", {"seed": -1, "then": 7}),
             d=("Seeded", {"seed": "random", "then": -1}), e=("Seeded", {"seed": 2**64 - 1}))
    stepped = offset_seeds(parse(doc), registry, 2).to_json()["nodes"]
    assert {k: (v["inputs"]["seed"], v["inputs"].get("then")) for k, v in stepped.items()} == {
        "a": (12, None), "b": (2, None), "c": (-1, 9), "d": ("random", -1), "e": (1, None)}
    assert offset_seeds(parse(doc), registry, 0).to_json() == parse(doc).to_json()
