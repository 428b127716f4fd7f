"""A real RunContext for calling node functions directly in tests, recording what they emit."""
from __future__ import annotations

from pathlib import Path

from graphflow.context import CancelToken, RunContext, Settings
from graphflow.events import Event, Preview, Progress, Warning_


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
