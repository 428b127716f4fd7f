"""The dispatcher with stand-in executors (no Ray, no engine): queue order across several workers, routing by the
executors' caches, and what happens when a worker is lost mid-job."""
from __future__ import annotations

import threading
import time

import pytest

from graphflow.server.dispatch import Dispatcher
from graphflow.server.routing import cached_prefix
from graphflow.server.store import JobStore
from graphflow.server.worker import Finished, WorkerLost


class FakeExecutor:
    """Runs a job by waiting until the test releases it (``release``), or is lost (``lose``)."""

    def __init__(self, name: str, cached=()):
        self.name = self.ident = name
        self.load = 0
        self.cached = set(cached)
        self.ran: list[str] = []
        self.gate = threading.Event()
        self.lose_next: WorkerLost | None = None
        self.cancelled: list[tuple[str, bool]] = []
        self.cancel_event = threading.Event()

    def cached_part(self, job):
        return cached_prefix(job.workflow.get("keys", []), self.cached)

    def run(self, job, send):
        self.ran.append(job.id)
        send({"type": "progress", "job": job.id, "node": "n", "value": 1, "max": 2})
        if self.lose_next is not None:
            lost, self.lose_next = self.lose_next, None
            raise lost
        while not self.gate.wait(0.01):
            if self.cancel_event.is_set():
                return Finished("cancelled")
        return Finished("succeeded", outputs={"show": {"value": job.workflow["value"]}}, executed=["show"])

    def cancel(self, job_id, by_user=True):
        self.cancelled.append((job_id, by_user))
        self.cancel_event.set()


class FakePool:
    poll_interval = 0.05

    def __init__(self, *executors):
        self.live = list(executors)

    def executors(self):
        return list(self.live)

    def refresh(self):
        pass

    def lost(self, executor):
        self.live.remove(executor)

    def close(self):
        pass


@pytest.fixture
def store(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    yield store
    store.close()


@pytest.fixture
def run_dispatcher(store):
    made = []

    def make(*executors):
        events: list[dict] = []
        dispatcher = Dispatcher(FakePool(*executors), store, events.append)
        dispatcher.start()
        made.append((dispatcher, executors))
        return dispatcher, events

    yield make
    for dispatcher, executors in made:
        for executor in executors:
            executor.gate.set()
        dispatcher.stop()


def until(condition, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_jobs_start_in_queue_order_across_workers_priority_first(store, run_dispatcher):
    a, b = FakeExecutor("a"), FakeExecutor("b")
    low = store.add({"value": 1}, priority=0)
    high = store.add({"value": 2}, priority=5)
    later = store.add({"value": 3}, priority=0)
    dispatcher, events = run_dispatcher(a, b)
    until(lambda: len(a.ran) + len(b.ran) == 2)
    assert [e["job"] for e in events if e["type"] == "started"] == [high, low]  # the third waits for a free worker
    a.gate.set()
    b.gate.set()
    until(lambda: store.get(later)["status"] == "succeeded")
    assert [e["job"] for e in events if e["type"] == "started"] == [high, low, later]


def test_the_worker_that_cached_the_plan_gets_it_and_the_started_event_names_it(store, run_dispatcher):
    cold, warm = FakeExecutor("cold"), FakeExecutor("warm", cached={"k1", "k2"})
    cold.gate.set()
    warm.gate.set()
    job = store.add({"value": 1, "keys": ["k1", "k2", "k3"]})
    dispatcher, events = run_dispatcher(cold, warm)
    until(lambda: store.get(job)["status"] == "succeeded")
    assert warm.ran == [job] and cold.ran == []
    assert {"type": "started", "job": job, "worker": "warm"} in events


def test_a_lost_workers_job_runs_again_on_another_with_a_warning(store, run_dispatcher):
    a, b = FakeExecutor("a"), FakeExecutor("b", cached={"k"})
    b.lose_next = WorkerLost("b (host pid 1)", "its actor was killed")
    a.gate.set()
    job = store.add({"value": 4, "keys": ["k"]})
    dispatcher, events = run_dispatcher(a, b)
    until(lambda: store.get(job)["status"] == "succeeded")
    assert b.ran == [job] and a.ran == [job]
    assert store.get(job)["outputs"] == {"show": {"value": 4}}
    [warning] = [e for e in events if e["type"] == "warning"]
    assert warning["message"] == "b (host pid 1) was lost (its actor was killed); the job runs again on a"
    assert [e["type"] for e in events].count("started") == 1 and [e["type"] for e in events].count("succeeded") == 1


def test_a_second_loss_fails_the_job_naming_both_workers(store, run_dispatcher):
    a, b, c = FakeExecutor("a", cached={"k"}), FakeExecutor("b"), FakeExecutor("c")
    a.lose_next = WorkerLost("a", "its actor was killed")
    b.lose_next = WorkerLost("b", "its machine left the cluster or its process died")
    c.lose_next = WorkerLost("c", "should not be reached")
    b.load = 0
    c.load = 5  # so the retry goes to b
    job = store.add({"value": 1, "keys": ["k"]})
    run_dispatcher(a, b, c)
    until(lambda: store.get(job)["status"] == "failed")
    error = store.get(job)["error"]
    assert error["type"] == "WorkerLost" and error["node"] is None
    assert error["message"] == ("b was lost while running this job (its machine left the cluster or its process died); "
                                "it was already a retry after a was lost")
    assert c.ran == []


def test_losing_the_only_worker_fails_the_job_saying_so(store, run_dispatcher):
    only = FakeExecutor("only")
    only.lose_next = WorkerLost("only", "its actor was killed")
    job = store.add({"value": 1})
    run_dispatcher(only)
    until(lambda: store.get(job)["status"] == "failed")
    assert store.get(job)["error"]["message"] == ("only was lost while running this job (its actor was killed); "
                                                  "no other worker was there to retry it")


def test_a_worker_lost_before_it_took_the_job_costs_no_retry(store, run_dispatcher):
    a, b, c = FakeExecutor("a"), FakeExecutor("b"), FakeExecutor("c")
    a.lose_next = WorkerLost("a", "gone", accepted=False)
    b.lose_next = WorkerLost("b", "its actor was killed")
    c.gate.set()
    a.load, b.load, c.load = 0, 1, 2  # tried in this order
    job = store.add({"value": 1})
    dispatcher, events = run_dispatcher(a, b, c)
    until(lambda: store.get(job)["status"] == "succeeded")
    assert c.ran == [job]
    [warning] = [e for e in events if e["type"] == "warning"]  # only the loss after b had taken it is told
    assert warning["message"].startswith("b was lost")


def test_cancel_reaches_the_executor_running_the_job(store, run_dispatcher):
    a = FakeExecutor("a")
    job = store.add({"value": 1})
    dispatcher, events = run_dispatcher(a)
    until(lambda: dispatcher.running == job and dispatcher.progress(job) is not None)
    assert dispatcher.cancel(job) == "cancelling"
    until(lambda: store.get(job)["status"] == "cancelled")
    assert a.cancelled == [(job, True)]
    assert dispatcher.cancel(job) is None


def test_stopping_passes_a_shutdown_cancellation_to_every_running_job(store, run_dispatcher):
    a, b = FakeExecutor("a"), FakeExecutor("b")
    jobs = [store.add({"value": i}) for i in range(2)]
    dispatcher, events = run_dispatcher(a, b)
    until(lambda: len(a.ran) + len(b.ran) == 2)
    dispatcher.stop()
    assert sorted(a.cancelled + b.cancelled) == sorted((job, False) for job in jobs)

