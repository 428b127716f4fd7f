"""The SQLite job store on its own: queue order, atomic claim/cancel, history, recovery."""
from __future__ import annotations

import sqlite3
import threading

import pytest

from graphflow.server.store import RESTART_REASON, JobStore


@pytest.fixture
def store(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    yield store
    store.close()


def doc(n: int) -> dict:
    return {"graphflow": 1, "nodes": {"n": {"type": "Number", "inputs": {"value": n}}}}


def test_claims_by_priority_then_submission_order(store):
    ids = [store.add(doc(0), priority=0), store.add(doc(1), priority=3), store.add(doc(2), priority=0),
           store.add(doc(3), priority=-1), store.add(doc(4), priority=3)]
    claimed = [store.claim_next() for _ in range(5)]
    assert [job.id for job in claimed] == [ids[1], ids[4], ids[0], ids[2], ids[3]]
    assert claimed[0].workflow == doc(1) and claimed[0].outputs is None
    assert store.claim_next() is None
    assert {job["status"] for job in store.list()} == {"running"}


def test_a_job_is_claimed_or_cancelled_never_both(store):
    ids = [store.add(doc(i)) for i in range(100)]
    claimed, cancelled = [], []

    def claim():
        while (job := store.claim_next()) is not None:
            claimed.append(job.id)

    def cancel():
        cancelled.extend(job_id for job_id in ids if store.cancel_queued(job_id))

    threads = [threading.Thread(target=claim), threading.Thread(target=claim), threading.Thread(target=cancel)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(claimed + cancelled) == sorted(ids)
    assert len(set(claimed)) == len(claimed)
    assert store.count("queued") == 0 and store.count("cancelled") == len(cancelled)


def test_finish_records_results_and_only_applies_to_running_jobs(store):
    job_id = store.add(doc(1), outputs=["show"], priority=2)
    assert not store.finish(job_id, "succeeded")  # still queued
    store.claim_next()
    assert store.finish(job_id, "succeeded", progress={"node": "n", "value": 3, "max": 3},
                        outputs={"show": {"value": 1}}, executed=["n", "show"], cached=[],
                        seconds=0.25, timings={"n": 0.125, "show": 0.0625})
    assert not store.finish(job_id, "failed")  # already finished
    job = store.get(job_id, with_workflow=True)
    assert job["status"] == "succeeded" and job["outputs"] == {"show": {"value": 1}}
    assert job["executed"] == ["n", "show"] and job["progress"]["value"] == 3 and job["error"] is None
    assert job["workflow"] == doc(1) and job["requested_outputs"] == ["show"] and job["priority"] == 2
    assert job["seconds"] == 0.25 and job["timings"] == {"n": 0.125, "show": 0.0625}
    assert not store.cancel_queued(job_id)
    with pytest.raises(ValueError):
        store.finish(job_id, "running")


def test_recover_fails_jobs_left_running_and_keeps_the_queue(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    running, queued = store.add(doc(1)), store.add(doc(2))
    store.claim_next()
    store.close()
    reopened = JobStore(tmp_path / "jobs.sqlite")
    assert reopened.recover() == 1
    assert reopened.get(running)["error"]["message"] == RESTART_REASON
    assert reopened.get(queued)["status"] == "queued"
    assert reopened.claim_next().id == queued
    reopened.close()


def test_a_failed_transaction_is_rolled_back_and_the_store_stays_usable(store):
    with pytest.raises(TypeError):
        store.add({"not": object()})  # the workflow cannot be stored: no half-written row
    assert store.list() == []
    assert store.get(store.add(doc(1)))["status"] == "queued"


def test_a_queue_file_from_before_the_timing_columns_opens_with_its_jobs(tmp_path):
    path = tmp_path / "jobs.sqlite"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, status TEXT NOT NULL,
            priority INTEGER NOT NULL, workflow TEXT NOT NULL, requested TEXT, created REAL NOT NULL, started REAL,
            finished REAL, progress TEXT, outputs TEXT, executed TEXT, cached TEXT, error TEXT);
        INSERT INTO jobs (id, status, priority, workflow, created) VALUES ('old', 'queued', 0, '{"graphflow": 1, "nodes": {}}', 1.0);
    """)
    old.close()
    store = JobStore(path)
    assert store.get("old")["seconds"] is None and store.get("old")["timings"] == {}
    assert store.claim_next().id == "old"
    assert store.finish("old", "succeeded", seconds=1.5, timings={"n": 1.0})
    assert store.get("old")["seconds"] == 1.5
    store.close()


def test_jobs_can_carry_client_data_and_a_chosen_id(store):
    plain = store.add(doc(0))
    mine = store.add(doc(1), priority=1, job_id="prompt-1", client={"number": 7, "prompt": {"1": {}}})
    assert mine == "prompt-1"
    with pytest.raises(ValueError, match="already a job 'prompt-1'"):
        store.add(doc(2), job_id="prompt-1")
    assert store.get("prompt-1", with_client=True)["client"] == {"number": 7, "prompt": {"1": {}}}
    assert "client" not in store.get("prompt-1")  # only when asked for: /jobs answers stay as they were
    assert [job["id"] for job in store.list(with_client=True)] == ["prompt-1"]
    assert [job["id"] for job in store.list("queued", run_order=True)] == ["prompt-1", plain]
    store.finish(store.claim_next().id, "succeeded")
    assert [job["id"] for job in store.list(("succeeded", "failed"))] == ["prompt-1"]
    assert store.count() == 2 and store.count("queued") == 1
