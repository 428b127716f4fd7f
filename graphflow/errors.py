"""The errors the engine reports. Each one names where the problem is, so no caller needs a traceback."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Issue:
    """One problem with one input of one node (``node`` is None for document-level problems)."""

    node: str | None
    input: str | None
    message: str
    expected: Any = None
    received: Any = None
    code: str | None = field(default=None, kw_only=True)  # what kind of problem, for programs: "missing_file", ...

    def __str__(self) -> str:
        where = ".".join(p for p in (self.node, self.input) if p) or "workflow"
        text = f"{where}: {self.message}"
        if self.expected is not None or self.received is not None:
            text += f" (expected {self.expected}, received {self.received})"
        return text

    def to_json(self) -> dict[str, Any]:
        return {k: _jsonable(v) for k, v in asdict(self).items() if k != "code" or v is not None}


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


class GraphflowError(Exception):
    """Base class: every error the engine raises on purpose."""


class WorkflowFormatError(GraphflowError):
    """The workflow text is not JSON, or not shaped like a graphflow workflow at all."""


class WorkflowInvalid(GraphflowError):
    """Validation found problems; nothing was executed. ``issues`` lists every one of them."""

    def __init__(self, issues: list[Issue]):
        self.issues = list(issues)
        super().__init__(f"{len(self.issues)} problem(s) in workflow:\n" + "\n".join(f"  - {i}" for i in self.issues))

    def by_node(self) -> dict[str, list[dict[str, Any]]]:
        grouped: dict[str, list[dict[str, Any]]] = {}
        for issue in self.issues:
            entry = issue.to_json()
            grouped.setdefault(entry.pop("node") or "", []).append(entry)
        return grouped


class NodeInputError(GraphflowError):
    """Raised by a node's function when one of its inputs is unusable at run time
    (a file that does not exist, an image that is not an image, ...)."""

    def __init__(self, input: str, message: str, expected: Any = None, received: Any = None):
        self.input, self.message, self.expected, self.received = input, message, expected, received
        super().__init__(message)

    def describe(self) -> str:
        """The message with what was expected and received, as reports show it."""
        if self.expected is None and self.received is None:
            return self.message
        return f"{self.message} (expected {self.expected}, received {self.received})"


class NodeFailed(GraphflowError):
    """A node raised while running. The run stopped; the engine stays usable."""

    def __init__(self, node: str, node_type: str, message: str, error_type: str, input: str | None = None, report: Any = None):
        self.node, self.node_type, self.message, self.error_type, self.input = node, node_type, message, error_type, input
        self.report = report
        where = f"{node}.{input}" if input else node
        super().__init__(f"node {where} ({node_type}) failed: {error_type}: {message}")

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "node_type": self.node_type, "input": self.input, "type": self.error_type, "message": self.message}


class Cancelled(GraphflowError):
    """The run was cancelled through its cancel token; finished nodes stay cached."""

    def __init__(self, node: str | None = None, report: Any = None):
        self.node, self.report = node, report
        super().__init__(f"run cancelled{f' during node {node}' if node else ''}")
