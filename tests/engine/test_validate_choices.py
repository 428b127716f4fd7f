"""A value outside a Literal/enum input: the choices are listed once (in expected) and the nearest one is suggested."""
from .conftest import chain, link, wf
from .test_validate import issues_of, only


def describe(mode):
    return wf(n=("Number", {"value": 1.0}), desc=("Describe", {"value": link("n"), "mode": mode}),
              show=("Show", {"value": link("desc")}))


def test_a_near_miss_suggests_the_nearest_choice_and_lists_the_choices_once(engine):
    issue = only(issues_of(engine, describe("fancie")))
    assert (issue.node, issue.input, issue.received) == ("desc", "mode", "fancie")
    assert issue.message == "not one of the 2 choices; did you mean 'fancy'?"
    assert issue.expected == "one of ['plain', 'fancy']"
    assert str(issue).count("'plain'") == 1


def test_case_is_ignored_when_looking_for_the_nearest_choice(engine):
    assert only(issues_of(engine, describe("PLAIN"))).message == "not one of the 2 choices; did you mean 'plain'?"


def test_nothing_near_suggests_nothing(engine):
    assert only(issues_of(engine, describe("zzzz"))).message == "not one of the 2 choices"


def test_other_literal_errors_keep_pydantic_message(engine):
    doc = chain()
    doc["nodes"]["x"]["inputs"]["value"] = 5000
    assert "less than or equal to 1000" in only(issues_of(engine, doc)).message
