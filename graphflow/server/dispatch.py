"""The dispatcher: claims jobs from the store in queue order (priority, then FIFO) and hands each to an idle
executor of its pool, chosen by cache affinity (``routing``); records results and publishes the terminal events.

The in-process server's pool holds one executor (the server's Engine); the Ray pool one per worker actor. Each
running job has its own thread, which blocks in ``executor.run`` while the job's events flow to ``publish``. A job
whose worker is lost is retried once, ahead of the queue, on another worker; failing that it fails with a message
naming the worker(s). The API thread talks to the dispatcher only through ``wake``, ``cancel`` and the read-only
``running`` / ``progress`` / ``seeds``.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Protocol

from .routing import WorkerView, choose_worker
from .store import Job, JobStore
from .worker import Executor, Finished, Publish, WorkerLost

log = logging.getLogger("graphflow.server")


class Pool(Protocol):
    poll_interval: float | None  # seconds between membership refreshes; None: only on wake-ups

    def executors(self) -> list[Executor]: ...  # the live ones, ready for jobs

    def refresh(self) -> None: ...  # notice workers that joined or went away

    def lost(self, executor: Executor) -> None: ...  # it raised WorkerLost: drop (and later replace) it

    def close(self) -> None: ...


@dataclass
class _Running:
    job: Job
    executor: Executor
    lost: list[str] = field(default_factory=list)  # workers this job has lost so far
    last_loss: str | None = None  # what the retry's warning tells
    progress: dict[str, Any] | None = None
    seeds: dict[str, dict[str, int]] | None = None
    cancelled_by_user: bool = False


class Dispatcher:
    def __init__(self, pool: Pool, store: JobStore, publish: Publish, private: Callable[[Any], Any] = lambda value: value):
        self.pool, self.store, self.publish = pool, store, publish
        self.private = private  # hides the server's folders in texts sent to clients
        self._wake = threading.Event()
        self._lock = threading.Lock()  # guards everything below; makes claim-vs-cancel one step
        self._running: dict[str, _Running] = {}  # by job id, in start order
        self._retry: deque[_Running] = deque()  # jobs whose worker was lost, waiting for another (run first)
        self._threads: set[threading.Thread] = set()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="graphflow-dispatcher", daemon=True)

    # -- what the API calls ------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Call after queueing a job."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after interrupting the running jobs; a node that never checks for cancellation is abandoned after
        ``timeout`` (its job is then marked failed at the next start)."""
        with self._lock:
            self._stopping = True
            for running in self._running.values():
                self._cancel_on(running, by_user=False)
            threads = list(self._threads)
        self._wake.set()
        for thread in [self._thread, *threads]:
            if thread.is_alive():
                thread.join(timeout)
        self.pool.close()

    @property
    def running(self) -> str | None:
        """The job running longest (None when none is)."""
        with self._lock:
            return next(iter(self._running), None)

    def progress(self, job_id: str) -> dict[str, Any] | None:
        running = self._running.get(job_id)
        return running.progress if running else None

    def seeds(self, job_id: str) -> dict[str, dict[str, int]] | None:
        running = self._running.get(job_id)
        return running.seeds if running else None

    def cancel(self, job_id: str) -> str | None:
        """'cancelled' (was queued), 'cancelling' (running: it stops at its next check) or None (neither)."""
        with self._lock:
            if self.store.cancel_queued(job_id):
                self._send({"type": "cancelled", "job": job_id})
                return "cancelled"
            waiting = next((r for r in self._retry if r.job.id == job_id), None)
            if waiting is not None:  # between two workers: nothing runs it now
                self._retry.remove(waiting)
                self.store.finish(job_id, "cancelled")
                self._send({"type": "cancelled", "job": job_id})
                return "cancelled"
            running = self._running.get(job_id)
            if running is not None:
                running.cancelled_by_user = True
                self._cancel_on(running, by_user=True)
                return "cancelling"
        return None

    # -- the dispatcher thread ---------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            self._wake.clear()  # before looking: a submission after this point sets it again
            if self._stopping:
                return
            try:
                self.pool.refresh()
                self._dispatch()
            except Exception:  # the store or the cluster is unusable for now: retry rather than die
                log.exception("dispatcher: could not hand out the next job")
                self._wake.wait(5.0)
                continue
            self._wake.wait(self.pool.poll_interval)

    def _dispatch(self) -> None:
        while True:
            with self._lock:
                if self._stopping:
                    return
                busy = {r.executor.ident for r in self._running.values()}
                executors = self.pool.executors()
                idle = [e for e in executors if e.ident not in busy]
                if not idle:
                    return
                retry = self._retry.popleft() if self._retry else None
                if retry is None:
                    job = self.store.claim_next()
                    if job is None:
                        return
                running = retry or _Running(job, idle[0])
                running.executor = self._route(running.job, idle)
                running.executor.load += 1
                if retry is None:
                    self._send({"type": "started", "job": job.id, "worker": running.executor.name})
                elif retry.last_loss:
                    self._send({"type": "warning", "job": retry.job.id, "node": None, "message": self.private(
                        f"{retry.last_loss}; the job runs again on {running.executor.name}")})
                self._running[running.job.id] = running
                thread = threading.Thread(target=self._run, args=(running,), name=f"graphflow-job-{running.job.id[:8]}",
                                          daemon=True)
                self._threads.add(thread)
            thread.start()

    def _route(self, job: Job, idle: list[Executor]) -> Executor:
        if len(idle) == 1:
            return idle[0]
        chosen = choose_worker([WorkerView(e.ident, True, e.cached_part(job), e.load) for e in idle])
        return next(e for e in idle if e.ident == chosen)

    def _run(self, running: _Running) -> None:
        job_id = running.job.id
        try:
            try:
                finished = running.executor.run(running.job, lambda message: self._relay(running, message))
            except WorkerLost as lost:
                finished = self._after_loss(running, lost)
            if finished is not None:
                self.store.finish(job_id, finished.status, progress=finished.progress, outputs=finished.outputs,
                                  executed=finished.executed, cached=finished.cached, error=finished.error,
                                  seconds=finished.seconds, timings=finished.timings, seeds=finished.seeds)
                self._send(finished.message(job_id))
        except Exception:  # recording the result failed: log it, keep the dispatcher alive
            log.exception("dispatcher: could not record job %s", job_id)
        finally:
            with self._lock:
                if self._running.get(job_id) is running:
                    del self._running[job_id]
                self._threads.discard(threading.current_thread())
            self._wake.set()

    def _after_loss(self, running: _Running, lost: WorkerLost) -> Finished | None:
        """Queue the job again for another worker (None), or the failure to record."""
        self.pool.lost(running.executor)
        log.warning("%s lost while running job %s: %s", lost.worker, running.job.id, lost.reason)
        with self._lock:
            del self._running[running.job.id]
            if running.cancelled_by_user:
                return Finished("cancelled", progress=running.progress, seeds=running.seeds or {})
            if lost.accepted:
                running.lost.append(lost.worker)
            others = [e for e in self.pool.executors() if e.ident != running.executor.ident]
            if len(running.lost) < 2 and others and not self._stopping:
                last_loss = f"{lost.worker} was lost ({lost.reason})" if lost.accepted else None
                self._retry.append(replace(running, lost=list(running.lost), last_loss=last_loss))  # this thread's record is done
                self._wake.set()
                return None
        message = f"{lost.worker} was lost while running this job ({lost.reason})"
        if len(running.lost) > 1:
            message = f"{message}; it was already a retry after {running.lost[0]} was lost"
        elif not others:
            message += "; no other worker was there to retry it"
        return Finished("failed", error={"node": None, "type": "WorkerLost", "message": self.private(message)},
                        progress=running.progress, seeds=running.seeds or {})

    def _relay(self, running: _Running, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "progress":
            running.progress = {"node": message["node"], "value": message["value"], "max": message["max"]}
        elif kind == "seeds":
            running.seeds = message["seeds"]
        self._send(message)

    def _cancel_on(self, running: _Running, by_user: bool) -> None:
        try:
            running.executor.cancel(running.job.id, by_user)
        except Exception:  # an unreachable worker: its loss reaches the job's thread anyway
            log.exception("dispatcher: could not pass the cancellation of job %s to %s", running.job.id, running.executor.name)

    def _send(self, message: dict[str, Any]) -> None:
        try:
            self.publish(message)
        except Exception:  # a broken subscriber must not fail the job that emitted the event
            log.exception("dispatcher: could not publish %s", message.get("type"))
