"""Running one job on an Engine, the same way wherever the Engine lives, and the in-process worker.

:func:`run_job` turns a run's engine events into JSON messages tagged with the job id (previews at most
``preview_interval`` apart, warnings with the folders hidden) and its outcome into a :class:`Finished` record: the
in-process :class:`LocalExecutor` calls it on the server's Engine, a Ray worker actor on its own
(``ray_pool``). The dispatcher (``dispatch``) decides which executor runs which job and records the results.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol
from urllib.parse import quote

from ..context import CancelToken, Settings
from ..errors import Cancelled, GraphflowError, NodeFailed
from ..events import Event, Preview, Progress, RunCancelled, RunFailed, RunSucceeded, SeedsUsed, Warning_
from ..execute import Engine, RunReport
from ..outputs import OutputFile
from ..paths import hide_folders
from .routing import cached_prefix
from .store import Job

log = logging.getLogger("graphflow.server")
SHUTDOWN_REASON = "interrupted by server shutdown"
Publish = Callable[[dict[str, Any]], None]


def public_outputs(outputs: dict[str, Any], files: dict[str, list[OutputFile]]) -> dict[str, dict[str, Any]]:
    """Output-node results in their wire form: each file an ``{"url": "/outputs/...", ...info}`` entry under its
    kind's group (``images``, ``checkpoints``, ...); results that are no files as the node returned them."""
    public: dict[str, dict[str, Any]] = {}
    for node_id, result in outputs.items():
        written = files.get(node_id)
        if not written:
            public[node_id] = result
            continue
        grouped: dict[str, list[dict[str, Any]]] = {}
        for item in written:
            grouped.setdefault(item.group, []).append({"url": "/outputs/" + quote(item.filename), **item.info})
        public[node_id] = grouped
    return public


def private(value: Any, settings: Settings) -> Any:
    """Error and warning texts with an engine's folders shown as <models>, <inputs>, <outputs>, <assets>."""
    folders = {"<models>": settings.models_dir, "<inputs>": settings.input_dir, "<outputs>": settings.output_dir}
    folders.update({f"<assets {i}>" if i else "<assets>": folder for i, folder in enumerate(settings.asset_dirs)})
    return hide_folders(value, folders)


@dataclass
class Finished:
    """A job's result as the store records it (``outputs`` in wire form, filled in by the executor)."""

    status: str  # succeeded | failed | cancelled
    error: dict[str, Any] | None = None
    progress: dict[str, Any] | None = None
    seeds: dict[str, dict[str, int]] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    seconds: float | None = None
    timings: dict[str, float] | None = None

    def message(self, job_id: str) -> dict[str, Any]:
        """The terminal WebSocket message."""
        message: dict[str, Any] = {"type": self.status, "job": job_id}
        if self.status == "succeeded":
            message.update(outputs=self.outputs, executed=self.executed, cached=self.cached, seeds=self.seeds)
        elif self.status == "failed":
            message["error"] = self.error
        return message


def run_job(engine: Engine, job: Job, send: Publish, cancel: CancelToken, cancelled_by_user: Callable[[], bool],
            preview_interval: float = 0.5) -> tuple[Finished, RunReport | None]:
    """Run ``job`` on ``engine``, sending its events; never raises for a failing job. The terminal event is not
    sent: whoever records the result sends it afterwards, so a client reacting to it sees the final state."""
    finished = Finished("succeeded")
    last_preview = float("-inf")

    def observe(event: Event) -> None:
        nonlocal last_preview
        if isinstance(event, (RunSucceeded, RunFailed, RunCancelled)):
            return
        if isinstance(event, Progress):
            finished.progress = {"node": event.node, "value": event.value, "max": event.max}
        if isinstance(event, SeedsUsed):
            finished.seeds = event.seeds
        if isinstance(event, Preview):
            now = time.monotonic()
            if now - last_preview < preview_interval:
                return
            last_preview = now
        message = event.to_json()
        message["job"] = message.pop("run_id")
        if isinstance(event, Warning_):
            message = private(message, engine.settings)
        try:
            send(message)
        except Exception:  # a broken subscriber must not fail the node that emitted the event
            log.exception("worker: could not publish %s", message.get("type"))

    report = None
    try:
        report = engine.run(job.workflow, job.outputs, on_event=observe, cancel=cancel, run_id=job.id)
    except Cancelled as exc:
        report = exc.report
        if cancelled_by_user():
            finished.status = "cancelled"
        else:
            finished.status, finished.error = "failed", {"node": exc.node, "type": "Interrupted", "message": SHUTDOWN_REASON}
    except NodeFailed as exc:
        report, finished.status, finished.error = exc.report, "failed", exc.to_json()
    except Exception as exc:  # never let one job take the worker down
        if not isinstance(exc, GraphflowError):
            log.exception("job %s failed unexpectedly", job.id)
        report, finished.status = getattr(exc, "report", None), "failed"
        finished.error = {"node": None, "type": type(exc).__name__, "message": str(exc) or repr(exc)}
    finished.error = private(finished.error, engine.settings)
    if report is not None:
        finished.executed, finished.cached = list(report.executed), list(report.cached)
        finished.seconds, finished.timings = report.seconds, dict(report.timings)
    return finished, report


class WorkerLost(Exception):
    """The worker running a job went away (process killed, machine lost). ``accepted``: whether it had taken the
    job before it went (if not, the job never started there and moving it costs no retry)."""

    def __init__(self, worker: str, reason: str, accepted: bool = True):
        super().__init__(f"{worker}: {reason}")
        self.worker, self.reason, self.accepted = worker, reason, accepted


class Executor(Protocol):
    """One place jobs run, one at a time: the server's own Engine or a Ray actor's."""

    name: str  # shown in messages; unique among live executors
    ident: str  # unique for this executor's lifetime (a replacement under the same name gets another)
    load: int  # jobs given to it so far

    def cached_part(self, job: Job) -> int:
        """How many of the job's plan nodes its cache holds, by its own content keys (0 when it cannot tell)."""

    def run(self, job: Job, send: Publish) -> Finished:
        """Run the job, sending its events; raises WorkerLost if the executor goes away meanwhile."""

    def cancel(self, job_id: str, by_user: bool = True) -> None:
        """Stop the job at its next check if it is the one running here."""


class LocalExecutor:
    """The server's own Engine, run on the dispatcher's job thread."""

    def __init__(self, engine: Engine, preview_interval: float = 0.5):
        self.engine, self.preview_interval = engine, preview_interval
        self.name = self.ident = "local"
        self.load = 0
        self._lock = threading.Lock()
        self._current: tuple[str, CancelToken, list[bool]] | None = None  # job id, token, [cancelled by user]

    def cached_part(self, job: Job) -> int:
        return cached_part(self.engine, job)

    def run(self, job: Job, send: Publish) -> Finished:
        token, by_user = CancelToken(), [False]
        with self._lock:
            self._current = (job.id, token, by_user)
        try:
            finished, report = run_job(self.engine, job, send, token, lambda: by_user[0], self.preview_interval)
        finally:
            with self._lock:
                self._current = None
        if report is not None:
            finished.outputs = private(public_outputs(report.outputs, report.files), self.engine.settings)
        return finished

    def cancel(self, job_id: str, by_user: bool = True) -> None:
        with self._lock:
            if self._current is not None and self._current[0] == job_id:
                self._current[2][0] = by_user
                self._current[1].cancel()


class LocalPool:
    """The in-process server's one executor."""

    poll_interval: float | None = None  # membership never changes: the dispatcher waits for a wake-up

    def __init__(self, engine: Engine, preview_interval: float = 0.5):
        self._executors = [LocalExecutor(engine, preview_interval)]

    def executors(self) -> list[LocalExecutor]:
        return list(self._executors)

    def refresh(self) -> None:
        pass

    def lost(self, executor: Executor) -> None:
        pass

    def close(self) -> None:
        pass


def cached_part(engine: Engine, job: Job) -> int:
    """How many of the job's plan nodes the engine's cache holds (random seeds are not drawn yet: what depends on
    them matches nothing, which is right); 0 when the plan cannot be made (the run will say why)."""
    from ..plan import make_plan

    try:
        plan = make_plan(engine.validate(job.workflow, job.outputs), engine.settings)
    except Exception:
        return 0
    return cached_prefix([plan.keys[node_id] for node_id in plan.order], engine.cache)
