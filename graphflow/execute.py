"""The executor: validate → plan → run each needed node (or take it from the cache) → report.

The CLI, the Python builder and the server all run workflows through :class:`Engine`; none of them
re-implements a step. An engine owns one cache and runs one workflow at a time.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from . import env
from .cache import ResultCache, digest
from .context import CancelToken, RunContext, Settings
from .disk_cache import DiskCache
from .errors import Cancelled, NodeFailed, NodeInputError
from .events import (NodeCached, NodeFinished, NodeStarted, Observer, RunCancelled, RunFailed, RunSucceeded, SeedsUsed,
                     no_observer)
from .outputs import OutputFile, files_of, report_form
from .plan import make_plan
from .provenance import Provenance
from .registry import Registry, default_registry
from .seeds import draw_seeds
from .validate import CheckedNode, CheckedWorkflow, validate
from .documents import read_document, read_file
from .workflow import Workflow

log = logging.getLogger("graphflow")


@dataclass
class RunReport:
    """What a run did: nodes executed and taken from cache (in order), per-node seconds, output-node results,
    and the seeds used (a random seed input shows the seed drawn for this run).

    ``outputs`` holds each output node's result in its JSON form (files grouped by kind, see
    :func:`graphflow.outputs.report_form`), ``files`` the files each one wrote, typed. ``values`` holds every
    planned node's outputs by name (references into the cache, not copies)."""

    run_id: str
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, list[OutputFile]] = field(default_factory=dict)
    values: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    seconds: float = 0.0
    seeds: dict[str, dict[str, int]] = field(default_factory=dict)  # node id → seed input → seed used

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "executed": self.executed, "cached": self.cached,
                "timings": self.timings, "outputs": self.outputs, "seconds": self.seconds, "seeds": self.seeds}


WorkflowLike = Workflow | dict | str | Path


class Engine:
    def __init__(self, registry: Registry | None = None, settings: Settings | None = None,
                 cache: ResultCache | None = None, check_mutations: bool | None = None,
                 disk_cache: DiskCache | None = None):
        self.registry = registry or default_registry()
        self.settings = settings or Settings.from_env()
        self.cache = cache if cache is not None else ResultCache()
        self.disk_cache = disk_cache if disk_cache is not None else DiskCache.from_env()
        if check_mutations is None:
            check_mutations = env.read("GRAPHFLOW_CHECK_MUTATIONS", False)
        self.check_mutations = check_mutations
        self._lock = threading.Lock()

    def validate(self, workflow: WorkflowLike, outputs: Iterable[str] | None = None) -> CheckedWorkflow:
        return validate(as_workflow(workflow, self.registry), self.registry, outputs, self.settings)

    def run(self, workflow: WorkflowLike, outputs: Iterable[str] | None = None, on_event: Observer | None = None,
            cancel: CancelToken | None = None, run_id: str | None = None) -> RunReport:
        """Run a workflow. Raises WorkflowInvalid (nothing ran), NodeFailed or Cancelled (each with ``.report``).

        Random seeds (``-1`` / ``"random"`` on a seed input) are drawn here, before planning, so the cache key
        and everything downstream use the drawn seed."""
        checked, seeds = draw_seeds(self.validate(workflow, outputs))
        report = RunReport(run_id or uuid.uuid4().hex)
        emit = on_event or no_observer
        cancel = cancel or CancelToken()
        with self._lock:
            started = time.perf_counter()
            try:
                plan = make_plan(checked, self.settings)
                report.seeds = {node_id: seeds[node_id] for node_id in plan.order if node_id in seeds}
                if report.seeds:
                    emit(SeedsUsed(report.run_id, report.seeds))
                for node_id in plan.order:
                    if cancel.cancelled:
                        raise Cancelled(node_id)
                    self._run_node(checked, node_id, plan.keys[node_id], report, emit, cancel)
            except Cancelled as exc:
                exc.report = report
                emit(RunCancelled(report.run_id, exc.node))
                raise
            except NodeFailed as exc:
                exc.report = report
                emit(RunFailed(report.run_id, exc.to_json()))
                raise
            finally:
                report.seconds = time.perf_counter() - started
        emit(RunSucceeded(report.run_id, report))
        return report

    def _run_node(self, checked: CheckedWorkflow, node_id: str, key: str, report: RunReport, emit: Observer,
                  cancel: CancelToken) -> None:
        node = checked.nodes[node_id]
        spec = node.spec
        outputs = self.cache.get(key)
        if outputs is None:
            outputs = self._from_disk(node, key)
        if outputs is not None:
            report.cached.append(node.id)
            emit(NodeCached(report.run_id, node.id, spec.name))
        else:
            emit(NodeStarted(report.run_id, node.id, spec.name))
            sockets = {name: report.values[link.node][link.output] for name, link in node.links.items()}
            # Output nodes see what produced their inputs (for metadata); other nodes see only their inputs.
            graph = Provenance.of(checked, node.id, report.values) if spec.output_node else None
            ctx = RunContext(report.run_id, node.id, spec.name, self.settings, emit, cancel, graph)
            before = self._digests(sockets)
            started = time.perf_counter()
            outputs = self._call(node, sockets, ctx)
            seconds = time.perf_counter() - started
            self._check_untouched(node, sockets, before)
            self.cache.put(key, outputs, spec.pool)
            self._to_disk(node, key, outputs)
            report.executed.append(node.id)
            report.timings[node.id] = seconds
            emit(NodeFinished(report.run_id, node.id, spec.name, seconds))
        if spec.output_node:
            report.outputs[node.id] = report_form(outputs[0])
            report.files[node.id] = files_of(outputs[0])
            report.values[node.id] = {}
        else:
            report.values[node.id] = dict(zip(spec.outputs, outputs))

    def _disk_cacheable(self, node: CheckedNode) -> bool:
        spec = node.spec
        return self.disk_cache is not None and spec.pool != "model" and spec.cache != "never" and not spec.output_node

    def _from_disk(self, node: CheckedNode, key: str) -> tuple[Any, ...] | None:
        """The node's outputs from the persistent disk cache (then kept in memory too), or None."""
        if not self._disk_cacheable(node):
            return None
        outputs = self.disk_cache.get(key)
        if outputs is not None and len(outputs) == len(node.spec.outputs):
            self.cache.put(key, outputs, node.spec.pool)
            return outputs
        return None

    def _to_disk(self, node: CheckedNode, key: str, outputs: tuple[Any, ...]) -> None:
        if self._disk_cacheable(node):
            self.disk_cache.put(key, outputs)

    def _call(self, node: CheckedNode, sockets: dict[str, Any], ctx: RunContext) -> tuple[Any, ...]:
        spec = node.spec
        try:
            result = spec.call(sockets, node.literals, ctx)
        except Cancelled:
            raise
        except NodeInputError as exc:
            raise NodeFailed(node.id, spec.name, exc.describe(), "NodeInputError", exc.input) from exc
        except Exception as exc:
            log.debug("node %s (%s) raised", node.id, spec.name, exc_info=True)
            raise NodeFailed(node.id, spec.name, str(exc) or repr(exc), type(exc).__name__) from exc
        return (result,) if spec.output_node else tuple(result)

    def _digests(self, sockets: dict[str, Any]) -> dict[str, str] | None:
        return {name: digest(value) for name, value in sockets.items()} if self.check_mutations else None

    def _check_untouched(self, node: CheckedNode, sockets: dict[str, Any], before: dict[str, str] | None) -> None:
        if before is None:
            return
        for name, value in sockets.items():
            if digest(value) != before[name]:
                raise NodeFailed(node.id, node.spec.name, f"node mutated its input {name!r}; cached values are shared and must not change",
                                 "MutatedInput", name)


def as_workflow(workflow: WorkflowLike, registry: Registry | None = None) -> Workflow:
    """A Workflow as it is; a path read as a file (JSON or PNG); a decoded document in any format a pack reads."""
    if isinstance(workflow, Workflow):
        return workflow
    if isinstance(workflow, (str, Path)):
        return read_file(workflow, registry)
    return read_document(workflow, "workflow", registry)
