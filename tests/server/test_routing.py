"""The routing rule: the idle worker with the longest cached part of the job's plan, else the least loaded."""
from graphflow.server.routing import WorkerView, cached_prefix, choose_worker

PLAN = ["checkpoint", "prompt", "latent", "first-pass", "upscale", "second-pass", "save"]  # keys in plan order


def view(name: str, idle: bool = True, cache=(), load: int = 0) -> WorkerView:
    return WorkerView(name, idle, cached_prefix(PLAN, set(cache)), load)


def test_the_idle_worker_holding_most_of_the_plan_gets_the_job():
    workers = [view("a", cache={"checkpoint"}), view("b", cache={"checkpoint", "prompt", "first-pass"}), view("c")]
    assert choose_worker(workers) == "b"


def test_a_busy_worker_is_never_chosen_however_much_it_holds():
    assert choose_worker([view("warm", idle=False, cache=PLAN), view("cold", load=9)]) == "cold"


def test_without_any_cached_part_the_least_loaded_idle_worker_gets_it():
    workers = [view("a", cache={"elsewhere"}, load=3), view("b", load=1), view("c", idle=False, load=0)]
    assert choose_worker(workers) == "b"


def test_affinity_outweighs_load():
    assert choose_worker([view("busy-before", cache={"checkpoint"}, load=50), view("fresh", load=0)]) == "busy-before"


def test_equal_affinity_goes_to_the_least_loaded_then_the_first_name():
    assert choose_worker([view("x", cache={"checkpoint"}, load=2), view("y", cache={"checkpoint"}, load=1)]) == "y"
    assert choose_worker([view("y"), view("x")]) == "x"


def test_no_idle_worker_means_no_choice():
    assert choose_worker([view("a", idle=False, cache=PLAN)]) is None
    assert choose_worker([]) is None


def test_cached_prefix_counts_the_plan_keys_a_cache_holds():
    assert cached_prefix(PLAN, {"checkpoint", "prompt", "unrelated"}) == 2
    assert cached_prefix(PLAN, set()) == 0
    assert cached_prefix([], {"checkpoint"}) == 0
