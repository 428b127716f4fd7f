"""The routing rule: the idle worker with the longest cached part of the job's plan, else the least loaded."""
from graphflow.server.routing import WorkerView, cached_prefix, choose_worker

PLAN = ["checkpoint", "prompt", "latent", "first-pass", "upscale", "second-pass", "save"]  # keys in plan order


def test_the_idle_worker_holding_most_of_the_plan_gets_the_job():
    workers = [WorkerView("a", True, {"checkpoint"}), WorkerView("b", True, {"checkpoint", "prompt", "first-pass"}),
               WorkerView("c", True, set())]
    assert choose_worker(PLAN, workers) == "b"


def test_a_busy_worker_is_never_chosen_however_much_it_holds():
    workers = [WorkerView("warm", False, set(PLAN)), WorkerView("cold", True, set(), load=9)]
    assert choose_worker(PLAN, workers) == "cold"


def test_without_any_cached_part_the_least_loaded_idle_worker_gets_it():
    workers = [WorkerView("a", True, {"elsewhere"}, load=3), WorkerView("b", True, set(), load=1),
               WorkerView("c", False, set(), load=0)]
    assert choose_worker(PLAN, workers) == "b"


def test_equal_affinity_goes_to_the_least_loaded_then_the_first_name():
    assert choose_worker(PLAN, [WorkerView("x", True, {"checkpoint"}, 2), WorkerView("y", True, {"checkpoint"}, 1)]) == "y"
    assert choose_worker(PLAN, [WorkerView("y", True, set(), 0), WorkerView("x", True, set(), 0)]) == "x"


def test_no_idle_worker_means_no_choice():
    assert choose_worker(PLAN, [WorkerView("a", False, set(PLAN))]) is None
    assert choose_worker(PLAN, []) is None


def test_an_empty_plan_still_spreads_by_load():
    assert choose_worker([], [WorkerView("a", True, {"k"}, 5), WorkerView("b", True, set(), 4)]) == "b"


def test_cached_prefix_counts_the_plan_keys_a_cache_holds():
    assert cached_prefix(PLAN, {"checkpoint", "prompt", "unrelated"}) == 2
    assert cached_prefix(PLAN, set()) == 0
