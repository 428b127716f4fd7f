"""Events the executor emits to observers (CLI progress bar, server WebSocket, tests).

Every event is a small frozen dataclass with the run id; ``to_json()`` gives the wire form with a
``type`` field, which the server forwards unchanged."""
from __future__ import annotations

import base64
from dataclasses import dataclass, fields
from typing import Any, Callable


@dataclass(frozen=True)
class Event:
    run_id: str

    kind = "event"

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        for key, value in data.items():
            if isinstance(value, bytes):
                data[key] = base64.b64encode(value).decode("ascii")
        return {"type": self.kind, **data}


@dataclass(frozen=True)
class SeedsUsed(Event):
    """Sent before the first node: node id → seed input → the seed this run uses (drawn ones included)."""

    seeds: dict[str, dict[str, int]]
    kind = "seeds"


@dataclass(frozen=True)
class NodeStarted(Event):
    node: str
    node_type: str
    kind = "node_started"


@dataclass(frozen=True)
class NodeCached(Event):
    node: str
    node_type: str
    kind = "node_cached"


@dataclass(frozen=True)
class NodeFinished(Event):
    node: str
    node_type: str
    seconds: float
    kind = "node_finished"


@dataclass(frozen=True)
class Progress(Event):
    node: str
    value: int
    max: int
    kind = "progress"


@dataclass(frozen=True)
class Preview(Event):
    node: str
    image_png: bytes
    step: int | None
    kind = "preview"


@dataclass(frozen=True)
class Warning_(Event):
    node: str
    message: str
    kind = "warning"


@dataclass(frozen=True)
class RunSucceeded(Event):
    report: Any
    kind = "succeeded"

    def to_json(self) -> dict[str, Any]:
        return {"type": self.kind, "run_id": self.run_id, "report": self.report.to_json()}


@dataclass(frozen=True)
class RunFailed(Event):
    error: dict[str, Any]
    kind = "failed"


@dataclass(frozen=True)
class RunCancelled(Event):
    node: str | None
    kind = "cancelled"


Observer = Callable[[Event], None]


def no_observer(event: Event) -> None:
    """The default observer: ignore everything."""

