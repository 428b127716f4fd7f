"""Workers on a Ray cluster: one actor per GPU (or per machine, or ``--workers N``), each owning an Engine.

The server keeps its API, queue and history; the dispatcher hands a job to a :class:`RayExecutor`, which calls
its actor's streaming ``run``: the actor runs the job on its own Engine (its own node cache and model pool) and
yields the job's events as they happen, then the result with the bytes of every file it wrote, which the server
stores in its outputs folder (no shared filesystem). Uploaded inputs the workflow names travel the other way.

Actors are named (``worker-0``, ``worker-1``, ... in the pool's namespace) and detached, so a restarted server
reattaches to the ones still alive, warm caches included, and recreates the others. Ray is imported only here,
and only when the server runs with ``--ray``.
"""
from __future__ import annotations

import glob
import importlib
import logging
import os
import queue
import re
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from itertools import count
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Sequence

from ..context import CancelToken, Settings
from ..execute import Engine
from ..outputs import OutputFile
from ..paths import UnsafePath, atomic_write, resolve_inside
from ..registry import Registry, default_registry
from .store import Job
from .worker import Finished, Publish, WorkerLost, cached_part, private, public_outputs, run_job

log = logging.getLogger("graphflow.server")
AFFINITY_SECONDS = 1.0  # how long routing waits for an idle worker to say how much of a job it holds


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: start a Ray instance on this machine; "auto" or "HOST:PORT": join a cluster
    workers: int | None = None  # None: one per GPU in the cluster, or one per machine when it has no GPUs
    worker_cpus: float = 1.0  # CPUs each actor reserves (besides its GPU, if the cluster has GPUs)
    namespace: str = "graphflow"  # two servers on one cluster need two namespaces
    keep_workers: bool = True  # stopping the server leaves the workers up (warm) for the next one to reattach


def require_ray():
    try:
        import ray
    except ImportError:
        raise RuntimeError("--ray needs Ray, which is an optional extra: pip install 'graphflow[ray]' "
                           "(or pip install -e '.[ray]' in a checkout)") from None
    return ray


# -- the actor (runs in a Ray worker process, on any machine of the cluster) ---------------------------------
class WorkerActor:
    def __init__(self, node_modules: list[str] | None, models_dir: str | None, limits: dict[str, float],
                 preview_interval: float):
        if node_modules is None:
            registry = default_registry()
        else:
            registry = Registry()
            for name in node_modules:
                registry.add_module(importlib.import_module(name))
        self.scratch = Path(tempfile.mkdtemp(prefix="graphflow-worker-"))
        settings = Settings.from_env(models_dir=models_dir, input_dir=self.scratch / "inputs",
                                     output_dir=self.scratch / "outputs", limits=limits)  # the server's run limits
        for folder in (settings.input_dir, settings.output_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.engine = Engine(registry, settings)
        self.preview_interval = preview_interval
        self._lock = threading.Lock()
        self._current: tuple[str, CancelToken, list[bool]] | None = None

    def describe(self) -> dict[str, Any]:
        import ray

        return {"host": socket.gethostname(), "pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(),
                "gpus": [str(gpu) for gpu in ray.get_gpu_ids()], "cached": len(self.engine.cache),
                "limits": dict(self.engine.settings.limits)}

    def run(self, job_id: str, workflow: dict, outputs: list[str] | None, inputs: dict[str, bytes]) -> Iterator[dict]:
        """Yields ``{"type": "_accepted"}``, the job's events, then ``{"type": "_finished", ...}``."""
        yield {"type": "_accepted"}
        for name, data in inputs.items():
            target = resolve_inside(self.engine.settings.input_dir, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(target, lambda file: file.write(data), replace=True)
        token, by_user = CancelToken(), [False]
        with self._lock:
            self._current = (job_id, token, by_user)
        messages: queue.SimpleQueue = queue.SimpleQueue()
        done = object()
        result: list[Any] = []

        def work() -> None:
            try:
                result.append(run_job(self.engine, Job(job_id, workflow, outputs), messages.put, token,
                                      lambda: by_user[0], self.preview_interval))
            finally:
                messages.put(done)

        threading.Thread(target=work, name=f"graphflow-job-{job_id[:8]}", daemon=True).start()
        while (message := messages.get()) is not done:
            yield message
        with self._lock:
            self._current = None
        finished, report = result[0] if result else (Finished("failed", error={
            "node": None, "type": "WorkerError", "message": "the worker's run ended without a result"}), None)
        files: dict[str, list[tuple[OutputFile, bytes]]] = {}
        results: dict[str, Any] = {}
        if report is not None:
            results = private(report.outputs, self.engine.settings)
            for node_id, written in report.files.items():
                files[node_id] = [(item, self._take(item)) for item in written]
        yield {"type": "_finished", "finished": finished, "outputs": results, "files": files}

    def _take(self, item: OutputFile) -> bytes:
        """A written file's bytes; the local copy goes (the server's outputs folder is where outputs live)."""
        path = self.engine.settings.output_dir / item.filename
        data = path.read_bytes()
        path.unlink()
        return data

    def cached_part(self, workflow: dict, outputs: list[str] | None) -> int:
        return cached_part(self.engine, Job("", workflow, outputs))

    def cancel(self, job_id: str, by_user: bool = True) -> None:
        with self._lock:
            if self._current is not None and self._current[0] == job_id:
                self._current[2][0] = by_user
                self._current[1].cancel()

    def __del__(self) -> None:
        shutil.rmtree(getattr(self, "scratch", ""), ignore_errors=True)


# -- the server's side ---------------------------------------------------------------------------------------
class RayExecutor:
    def __init__(self, pool: "RayPool", name: str, actor: Any, described: dict[str, Any]):
        self.pool, self.name, self.actor = pool, name, actor
        self.ident = actor._actor_id.hex()
        self.where = f"{described['host']} pid {described['pid']}"
        self.load = 0

    def cached_part(self, job: Job) -> int:
        """Asked of the actor: its engine computes the keys as they are on its machine."""
        try:
            return self.pool.ray.get(self.actor.cached_part.remote(job.workflow, job.outputs), timeout=AFFINITY_SECONDS)
        except Exception:  # slow or gone: route as if it held nothing (a lost worker shows when it runs a job)
            return 0

    def run(self, job: Job, send: Publish) -> Finished:
        ray = self.pool.ray
        inputs = referenced_uploads(job.workflow, (self.pool.uploads_dir, *self.pool.asset_dirs))
        accepted = False
        try:
            for ref in self.actor.run.remote(job.id, job.workflow, job.outputs, inputs):
                item = ray.get(ref)
                if item["type"] == "_accepted":
                    accepted = True
                elif item["type"] == "_finished":
                    finished = item["finished"]
                    finished.outputs = public_outputs(item["outputs"], store_files(self.pool.outputs_dir, item["files"]))
                    return finished
                else:
                    send(item)
        except ray.exceptions.RayTaskError as exc:  # the actor's code raised: a bug to report, not a lost worker
            log.error("worker %s raised on job %s: %s", self.name, job.id, exc)
            return Finished("failed", error={"node": None, "type": "WorkerError",
                                             "message": f"{self.name} ({self.where}) could not run the job: {type(exc.cause).__name__}: {exc.cause}"})
        except ray.exceptions.RayError as exc:
            raise WorkerLost(f"{self.name} ({self.where})", loss_reason(exc), accepted) from None
        raise WorkerLost(f"{self.name} ({self.where})", "its stream ended without a result", accepted)

    def cancel(self, job_id: str, by_user: bool = True) -> None:
        self.actor.cancel.remote(job_id, by_user)


def loss_reason(exc: Exception) -> str:
    text = str(exc)
    if "ray.kill" in text:
        return "its actor was killed"
    if "node" in text.lower() and ("died" in text.lower() or "dead" in text.lower()):
        return "its machine left the cluster or its process died"
    return f"{type(exc).__name__}: {text.strip().splitlines()[0] if text.strip() else 'no details'}"


@dataclass
class _Slot:
    actor: Any
    ready: Any  # the describe() call that answers once the actor has started
    executor: RayExecutor | None = None


class RayPool:
    poll_interval = 1.0  # seconds between looks at the cluster (nodes joining, actors starting)

    def __init__(self, options: RayOptions, registry: Registry, settings: Settings, uploads_dir: Path,
                 outputs_dir: Path, preview_interval: float = 0.5):
        self.ray = ray = require_ray()
        self.options, self.uploads_dir, self.outputs_dir = options, uploads_dir, outputs_dir
        self.asset_dirs = settings.asset_dirs  # the server's read-only example folders: their files travel like uploads
        self._owns_connection = not ray.is_initialized()
        if self._owns_connection:
            # "local": a Ray of our own even when `ray start` made one on this machine (which None would join)
            ray.init(address=options.address or "local", namespace=options.namespace, log_to_driver=False,
                     configure_logging=False, include_dashboard=False)
        self._actor_class = ray.remote(WorkerActor)
        self._init_args = (registry.modules(), str(Path(settings.models_dir).resolve()), dict(settings.limits),
                           preview_interval)
        self._slots: dict[int, _Slot] = {}
        self._lock = threading.Lock()
        self._last_refresh = float("-inf")

    def executors(self) -> list[RayExecutor]:
        with self._lock:
            return [slot.executor for slot in self._slots.values() if slot.executor is not None]

    def target(self) -> tuple[int, bool]:
        """How many workers the cluster should run now, and whether each takes a GPU."""
        gpus = int(self.ray.cluster_resources().get("GPU", 0))
        if self.options.workers:
            return self.options.workers, gpus > 0
        if gpus:
            return gpus, True
        return sum(1 for node in self.ray.nodes() if node["Alive"]), False

    def refresh(self) -> None:
        now = time.monotonic()
        if now - self._last_refresh < self.poll_interval * 0.9:
            return
        self._last_refresh = now
        wanted, with_gpu = self.target()
        with self._lock:
            for index in range(wanted):
                if index not in self._slots:
                    self._slots[index] = self._start(index, with_gpu)
            starting = {index: slot for index, slot in self._slots.items() if slot.executor is None}
        for index, slot in starting.items():
            ready, _ = self.ray.wait([slot.ready], timeout=0)
            if not ready:
                continue  # not placed yet (no free GPU/CPU): it starts when a machine joins
            try:
                described = self.ray.get(slot.ready)
            except self.ray.exceptions.RayError as exc:
                log.warning("worker-%d did not start: %s", index, loss_reason(exc))
                with self._lock:
                    self._slots.pop(index, None)
                continue
            slot.executor = RayExecutor(self, f"worker-{index}", slot.actor, described)
            log.info("worker-%d ready on %s (gpus %s, %d cached values)", index, slot.executor.where,
                        described["gpus"] or "none", described["cached"])

    def _start(self, index: int, with_gpu: bool) -> _Slot:
        """Create worker-``index``, or reattach to it when a previous server left it running."""
        actor = self._actor_class.options(
            name=f"worker-{index}", namespace=self.options.namespace, get_if_exists=True, lifetime="detached",
            max_concurrency=2,  # run() streams while cancel() answers
            num_cpus=self.options.worker_cpus, num_gpus=1 if with_gpu else 0, scheduling_strategy="SPREAD",
        ).remote(*self._init_args)
        return _Slot(actor, actor.describe.remote())

    def lost(self, executor: RayExecutor) -> None:
        with self._lock:
            for index, slot in list(self._slots.items()):
                if slot.executor is executor:
                    del self._slots[index]  # the next refresh starts a replacement under the same name
        try:
            self.ray.kill(executor.actor)  # a worker cut off but still running must not take the name
        except Exception:
            pass
        self._last_refresh = float("-inf")

    def close(self) -> None:
        """Disconnect. Workers on a cluster stay up for the next server unless ``keep_workers`` is off (a Ray
        started here ends with us either way)."""
        if not self.options.keep_workers:
            for slot in list(self._slots.values()):
                try:
                    self.ray.kill(slot.actor)
                except Exception:
                    pass
        if self._owns_connection:
            self.ray.shutdown()


def referenced_uploads(workflow: dict[str, Any], folders: Sequence[Path]) -> dict[str, bytes]:
    """The input files a workflow's literal inputs name, by name, looked up as the engine does (the uploads
    folder, then the server's asset folders): a worker elsewhere needs their bytes."""
    found: dict[str, bytes] = {}
    for node in (workflow.get("nodes") or {}).values():
        for value in (node.get("inputs") or {}).values():
            if not isinstance(value, str) or not value or value in found:
                continue
            for folder in folders:
                try:
                    path = resolve_inside(folder, value)
                except (UnsafePath, ValueError, OSError):
                    continue
                if path.is_file():
                    found[value] = path.read_bytes()
                    break
    return found


def store_files(outputs_dir: Path, files: dict[str, list[tuple[OutputFile, bytes]]]) -> dict[str, list[OutputFile]]:
    """Write a worker's files into the server's outputs folder under their own names, or, where another job took
    a name already (every worker numbers its files in a folder of its own), under the next free one."""
    stored: dict[str, list[OutputFile]] = {}
    for node_id, items in files.items():
        for item, data in items:
            name = item.filename
            while True:
                target = resolve_inside(outputs_dir, name)
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    atomic_write(target, lambda file: file.write(data))
                    break
                except FileExistsError:
                    name = next_free_name(outputs_dir, name)
            stored.setdefault(node_id, []).append(replace(item, filename=name))
    return stored


def next_free_name(folder: Path, name: str) -> str:
    """A name not yet used in ``folder``: a trailing counter continues after the highest one of that prefix
    (``img_00007.png`` → ``img_00012.png`` when 11 is the highest), any other name gets ``-2``, ``-3``, ..."""
    path = PurePosixPath(name)
    counter = re.fullmatch(r"(.*?)(\d+)", path.stem)
    if counter is None:
        taken = {p.name for p in (folder / path.parent).glob(f"{glob.escape(path.stem)}-*{glob.escape(path.suffix)}")}
        number = next(n for n in count(2) if f"{path.stem}-{n}{path.suffix}" not in taken)
        return str(path.with_name(f"{path.stem}-{number}{path.suffix}"))
    prefix, digits = counter.groups()
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    used = [int(m.group(1)) for p in (folder / path.parent).glob(f"{glob.escape(prefix)}*")
            if (m := pattern.match(p.name))]
    number = max([int(digits), *used]) + 1
    return str(path.with_name(f"{prefix}{number:0{len(digits)}d}{path.suffix}"))
