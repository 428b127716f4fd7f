"""The one worker thread: claims jobs from the store (priority, then FIFO) and runs them on the shared Engine.

It runs off the event loop so the API keeps answering while a job computes. Engine events are turned into
JSON messages tagged with the job id and handed to ``publish`` (which the app makes thread-safe); the
terminal message (succeeded / failed / cancelled) is published only after the store has recorded the result,
so a client that reacts to it by fetching ``/jobs/{id}`` sees the final state.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import quote

from ..context import CancelToken
from ..errors import Cancelled, GraphflowError, NodeFailed
from ..events import Event, Preview, Progress, RunCancelled, RunFailed, RunSucceeded, SeedsUsed, Warning_
from ..execute import Engine, RunReport
from ..paths import hide_folders
from .store import Job, JobStore

log = logging.getLogger("graphflow.server")
SHUTDOWN_REASON = "interrupted by server shutdown"
Publish = Callable[[dict[str, Any]], None]


def public_outputs(report: RunReport) -> dict[str, dict[str, Any]]:
    """Output-node results in their wire form: each file an ``{"url": "/outputs/...", ...info}`` entry under its
    kind's group (``images``, ``checkpoints``, ...); results that are no files as the node returned them."""
    public: dict[str, dict[str, Any]] = {}
    for node_id, result in report.outputs.items():
        files = report.files.get(node_id)
        if not files:
            public[node_id] = result
            continue
        grouped: dict[str, list[dict[str, Any]]] = {}
        for item in files:
            grouped.setdefault(item.group, []).append({"url": "/outputs/" + quote(item.filename), **item.info})
        public[node_id] = grouped
    return public


@dataclass
class _Running:
    job_id: str
    cancel: CancelToken = field(default_factory=CancelToken)
    progress: dict[str, Any] | None = None
    seeds: dict[str, dict[str, int]] = field(default_factory=dict)  # from the run's SeedsUsed event
    last_preview: float = float("-inf")
    cancelled_by_user: bool = False


class Worker:
    def __init__(self, engine: Engine, store: JobStore, publish: Publish, preview_interval: float = 0.5):
        self.engine, self.store, self.publish = engine, store, publish
        self.preview_interval = preview_interval  # seconds between previews of one job (≤ 2/s by default)
        self._wake = threading.Event()
        self._lock = threading.Lock()  # guards _current, and makes claim-vs-cancel one step
        self._current: _Running | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="graphflow-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after interrupting the running job; a node that never checks for cancellation is abandoned
        after ``timeout`` (its job is then marked failed at the next start)."""
        with self._lock:
            self._stopping = True
            if self._current is not None:
                self._current.cancel.cancel()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def wake(self) -> None:
        """Call after queueing a job."""
        self._wake.set()

    @property
    def running(self) -> str | None:
        current = self._current
        return current.job_id if current else None

    def progress(self, job_id: str) -> dict[str, Any] | None:
        current = self._current
        return current.progress if current and current.job_id == job_id else None

    def seeds(self, job_id: str) -> dict[str, dict[str, int]] | None:
        current = self._current
        return current.seeds if current and current.job_id == job_id else None

    def cancel(self, job_id: str) -> str | None:
        """'cancelled' (was queued), 'cancelling' (running: it stops at its next check) or None (neither)."""
        with self._lock:
            if self.store.cancel_queued(job_id):
                self._send({"type": "cancelled", "job": job_id})
                return "cancelled"
            if self._current is not None and self._current.job_id == job_id:
                self._current.cancelled_by_user = True
                self._current.cancel.cancel()
                return "cancelling"
        return None

    def _loop(self) -> None:
        while True:
            self._wake.clear()  # before claiming: a submission after this point sets it again
            try:
                with self._lock:
                    if self._stopping:
                        return
                    job = self.store.claim_next()
                    running = self._current = _Running(job.id) if job else None
            except Exception:  # the store is unusable for now (disk full, ...): retry rather than die
                log.exception("worker: could not claim the next job")
                self._wake.wait(5.0)
                continue
            if job is None:
                self._wake.wait()
                continue
            try:
                self._run(job, running)
            except Exception:  # recording the result failed: log it, keep the worker alive
                log.exception("worker: could not record job %s", job.id)
            finally:
                with self._lock:
                    self._current = None

    def _run(self, job: Job, running: _Running) -> None:
        self._send({"type": "started", "job": job.id})
        report, status, error = None, "succeeded", None
        try:
            report = self.engine.run(job.workflow, job.outputs, on_event=lambda e: self._observe(running, e),
                                     cancel=running.cancel, run_id=job.id)
        except Cancelled as exc:
            report = exc.report
            if running.cancelled_by_user:
                status = "cancelled"
            else:
                status, error = "failed", {"node": exc.node, "type": "Interrupted", "message": SHUTDOWN_REASON}
        except NodeFailed as exc:
            report, status = exc.report, "failed"
            error = exc.to_json()
        except Exception as exc:  # never let one job take the worker down
            if not isinstance(exc, GraphflowError):
                log.exception("job %s failed unexpectedly", job.id)
            report, status = getattr(exc, "report", None), "failed"
            error = {"node": None, "type": type(exc).__name__, "message": str(exc) or repr(exc)}
        error = self.private(error)
        if report is None:
            outputs, executed, cached, seconds, timings = {}, [], [], None, None
        else:
            outputs, executed, cached = self.private(public_outputs(report)), list(report.executed), list(report.cached)
            seconds, timings = report.seconds, dict(report.timings)
        self.store.finish(job.id, status, progress=running.progress, outputs=outputs, executed=executed,
                          cached=cached, error=error, seconds=seconds, timings=timings, seeds=running.seeds)
        message: dict[str, Any] = {"type": status, "job": job.id}
        if status == "succeeded":
            message.update(outputs=outputs, executed=executed, cached=cached, seeds=running.seeds)
        elif status == "failed":
            message["error"] = error
        self._send(message)

    def _observe(self, running: _Running, event: Event) -> None:
        if isinstance(event, (RunSucceeded, RunFailed, RunCancelled)):
            return  # _run publishes these itself, after the store has the result
        if isinstance(event, Progress):
            running.progress = {"node": event.node, "value": event.value, "max": event.max}
        if isinstance(event, SeedsUsed):
            running.seeds = event.seeds
        if isinstance(event, Preview):
            now = time.monotonic()
            if now - running.last_preview < self.preview_interval:
                return
            running.last_preview = now
        message = event.to_json()
        message["job"] = message.pop("run_id")
        if isinstance(event, Warning_):
            message = self.private(message)
        self._send(message)

    def private(self, value: Any) -> Any:
        """Error and warning texts with the server's folders shown as <models>, <inputs>, <outputs>, <assets>."""
        settings = self.engine.settings
        folders = {"<models>": settings.models_dir, "<inputs>": settings.input_dir, "<outputs>": settings.output_dir}
        folders.update({f"<assets {i}>" if i else "<assets>": folder for i, folder in enumerate(settings.asset_dirs)})
        return hide_folders(value, folders)

    def _send(self, message: dict[str, Any]) -> None:
        try:
            self.publish(message)
        except Exception:  # a broken subscriber must not fail the node that emitted the event
            log.exception("worker: could not publish %s", message.get("type"))
