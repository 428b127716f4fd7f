"""Calling node functions in tests the way the engine calls them, with a real RunContext that records what
they emit."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from graphflow.context import CancelToken, RunContext, Settings
from graphflow.events import Event, Preview, Progress, Warning_
from graphflow.node import spec_of

# The folders of the context run_node makes when a test passes none: they do not exist, so a node that
# reads or writes files says so instead of touching the working directory (pass ``stage_ctx``'s context).
NOWHERE = Path("/nonexistent/graphflow-tests")


class Recorder:
    """Collects events; ``cancel_after_progress=n`` cancels the run once n progress events were seen."""

    def __init__(self, cancel: CancelToken, cancel_after_progress: int | None = None):
        self.events: list[Event] = []
        self.cancel, self.cancel_after_progress = cancel, cancel_after_progress

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        if self.cancel_after_progress is not None and len(self.progress) >= self.cancel_after_progress:
            self.cancel.cancel()

    @property
    def progress(self) -> list[tuple[int, int]]:
        return [(e.value, e.max) for e in self.events if isinstance(e, Progress)]

    @property
    def warnings(self) -> list[str]:
        return [e.message for e in self.events if isinstance(e, Warning_)]

    @property
    def previews(self) -> list[Preview]:
        return [e for e in self.events if isinstance(e, Preview)]


def make_ctx(root: Path, node_type: str = "Test", cancel_after_progress: int | None = None) -> tuple[RunContext, Recorder]:
    """A context whose models/input/output folders are ``root/models``, ``root/input``, ``root/output``."""
    settings = Settings(models_dir=root / "models", input_dir=root / "input", output_dir=root / "output")
    cancel = CancelToken()
    recorder = Recorder(cancel, cancel_after_progress)
    ctx = RunContext("run", "node", node_type, settings, recorder, cancel)
    return ctx, recorder


def run_node(fn: Callable[..., Any], /, ctx: RunContext | None = None, **inputs: Any) -> Any:
    """Call a node function as the engine does: inputs by name, literals validated by the node's pydantic
    model (which fills in defaults and refuses what validation would refuse), unlinked optional sockets as
    None, a missing required socket refused, and always a real RunContext (one over :data:`NOWHERE` when
    none is given). Returns the single output (a tuple for several; what an output node returns, its OutputFile list)."""
    spec = spec_of(fn)
    unknown = set(inputs) - set(spec.input_order)
    if unknown:
        raise TypeError(f"{spec.name} has no inputs {sorted(unknown)}; it has {list(spec.input_order)}")
    sockets = {k: v for k, v in inputs.items() if k in spec.sockets}
    missing = [k for k, s in spec.sockets.items() if not s.optional and sockets.get(k) is None]
    if missing:
        raise TypeError(f"{spec.name} needs its sockets {missing}")
    literals = dict(spec.literals.model_validate({k: v for k, v in inputs.items() if k not in spec.sockets}))
    if ctx is None:
        ctx, _ = make_ctx(NOWHERE, spec.name)
    result = spec.call(sockets, literals, ctx)
    if spec.output_node:
        return result
    return result[0] if len(result) == 1 else result
