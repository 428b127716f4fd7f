"""The errors the engine reports. Each one names where the problem is, so no caller needs a traceback."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Literal

# What kind of problem an :class:`Issue` is, for programs (APIs, web pages) that must not parse messages.
IssueCode = Literal[
    "unknown_node_type",  # the node's type is not registered
    "unknown_input",  # an input name the node type does not have
    "missing_input",  # a required input is not given
    "wrong_input_kind",  # a link where a literal belongs, or the other way round
    "missing_link",  # a link to a node, or to an output, that does not exist
    "type_mismatch",  # a link whose output type the input does not accept
    "bad_value",  # a literal that its schema refuses (type, bounds, enum)
    "cycle",  # the links form a loop
    "no_output",  # no output node in the workflow, or none requested
    "not_an_output",  # a requested output that is missing or is not an output node
    "missing_file",  # a named file (model, image, ...) that does not exist
    "bad_document",  # not a graphflow workflow at all (server answers only)
    "over_limit",  # valid, but more than this server allows
]


@dataclass(frozen=True)
class Issue:
    """One problem with one input of one node (``node`` is None for document-level problems).
    ``code`` says what kind of problem it is (an :data:`IssueCode`); ``message`` says it to a person;
    ``node_type`` is the node's type when the node has one (validation fills it in)."""

    node: str | None
    input: str | None
    message: str
    expected: Any = None
    received: Any = None
    code: IssueCode = field(kw_only=True)
    node_type: str | None = field(default=None, kw_only=True)

    def __str__(self) -> str:
        where = ".".join(p for p in (self.node, self.input) if p) or "workflow"
        text = f"{where}: {self.message}"
        if self.expected is not None or self.received is not None:
            text += f" (expected {self.expected}, received {self.received})"
        if self.node_type is not None:
            text += f" [{self.node_type}]"
        return text

    def to_json(self) -> dict[str, Any]:
        return {k: _jsonable(v) for k, v in asdict(self).items()}


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


class InvalidArgument(ValueError):
    """Raised by a pure helper (a function that knows nothing of nodes) when one of its arguments is
    unusable; ``argument`` is the helper's own parameter name. The node that called the helper re-raises
    it as a :class:`NodeInputError` named after the node's input, with :func:`node_inputs`."""

    def __init__(self, argument: str, message: str, expected: Any = None, received: Any = None):
        self.argument, self.message, self.expected, self.received = argument, message, expected, received
        super().__init__(message)


@contextmanager
def node_inputs(**inputs: str) -> Iterator[None]:
    """Inside a node function: ``with node_inputs(table="source", key="name"): helper(...)`` turns an
    :class:`InvalidArgument` about the helper's argument ``table`` into a NodeInputError on input
    ``source``. An argument that is not mapped keeps the node's input of the same name."""
    try:
        yield
    except InvalidArgument as exc:
        name = inputs.get(exc.argument, exc.argument)
        raise NodeInputError(name, exc.message, exc.expected, exc.received) from exc


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
