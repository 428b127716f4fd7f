"""The workflow JSON format: parse text into a :class:`Workflow`, and back.

    {"graphflow": 1,
     "nodes": {"x":   {"type": "Number", "inputs": {"value": 2}},
               "sum": {"type": "Add", "title": "x plus one",
                       "inputs": {"a": {"from": "x", "output": "value"}, "bias": 1}}}}

A link is exactly ``{"from": NODE_ID, "output": OUTPUT_NAME}``; every other input value is a literal.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import WorkflowFormatError

FORMAT_VERSION = 1
LINK_KEYS = frozenset({"from", "output"})
MAX_DEPTH = 64  # arrays/objects inside each other; a workflow needs about 6 (document → nodes → inputs → a list)


@dataclass(frozen=True)
class Link:
    node: str
    output: str

    def to_json(self) -> dict[str, str]:
        return {"from": self.node, "output": self.output}


@dataclass
class NodeEntry:
    type: str
    inputs: dict[str, Any] = field(default_factory=dict)  # literal values and Link objects
    title: str | None = None

    def links(self) -> dict[str, Link]:
        return {name: value for name, value in self.inputs.items() if isinstance(value, Link)}

    def literals(self) -> dict[str, Any]:
        return {name: value for name, value in self.inputs.items() if not isinstance(value, Link)}


@dataclass
class Workflow:
    nodes: dict[str, NodeEntry]

    def to_json(self) -> dict[str, Any]:
        nodes = {}
        for node_id, entry in self.nodes.items():
            body: dict[str, Any] = {"type": entry.type}
            if entry.title is not None:
                body["title"] = entry.title
            body["inputs"] = {k: (v.to_json() if isinstance(v, Link) else v) for k, v in entry.inputs.items()}
            nodes[node_id] = body
        return {"graphflow": FORMAT_VERSION, "nodes": nodes}

    def with_values(self, overrides: dict[tuple[str, str], Any]) -> "Workflow":
        """A copy with some literal inputs replaced (``{(node_id, input): value}``)."""
        nodes = {k: NodeEntry(v.type, dict(v.inputs), v.title) for k, v in self.nodes.items()}
        for (node_id, name), value in overrides.items():
            if node_id not in nodes:
                raise WorkflowFormatError(f"cannot set {node_id}.{name}: no node {node_id!r} (nodes: {', '.join(nodes)})")
            nodes[node_id].inputs[name] = value
        return Workflow(nodes)


# The document schema, published by `graphflow schema` and used to check the shape of a document.
class LinkDoc(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, title="Link")
    from_: str = Field(alias="from", description="id of the node whose output feeds this input")
    output: str = Field(description="name of that node's output")


class NodeDoc(BaseModel):
    model_config = ConfigDict(extra="forbid", title="Node")
    type: str = Field(description="node type name, as listed by `graphflow nodes`")
    title: str | None = Field(None, description="optional human-readable label")
    inputs: dict[str, Any] = Field(default_factory=dict, description="input name → literal value or link {from, output}")


class WorkflowDoc(BaseModel):
    model_config = ConfigDict(extra="forbid", title="graphflow workflow")
    graphflow: Literal[1] = Field(description="format version")
    nodes: dict[str, NodeDoc]


def document_schema() -> dict[str, Any]:
    schema = WorkflowDoc.model_json_schema()
    schema["$defs"]["Link"] = LinkDoc.model_json_schema(by_alias=True)
    schema["$defs"]["NodeDoc"]["properties"]["inputs"]["additionalProperties"] = {
        "anyOf": [{"$ref": "#/$defs/Link"}, {"description": "a literal value"}]
    }
    return schema


class InvalidJson(WorkflowFormatError):
    """The text is not JSON at all (a syntax error), as opposed to JSON this format refuses."""


def decode_json(text: str, source: str = "workflow") -> Any:
    """Strict JSON: what any JSON parser reads alike. Malformed text, NaN/Infinity (and numbers too large for a
    float), integers of more digits than Python converts, and nesting deeper than :data:`MAX_DEPTH` each become a
    one-line :class:`WorkflowFormatError` naming the problem (never a RecursionError or a bare ValueError)."""
    def finite(text: str) -> float:
        value = float(text)
        if value in (float("inf"), float("-inf")):
            raise ValueError(f"number {text[:40]} is too large")
        return value

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number")

    try:
        data = json.loads(text, parse_float=finite, parse_constant=constant)
    except json.JSONDecodeError as exc:
        raise InvalidJson(f"{source}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise WorkflowFormatError(f"{source}: JSON nested too deeply (at most {MAX_DEPTH} levels)") from None
    except ValueError as exc:  # an integer of more than sys.get_int_max_str_digits() digits, NaN, 1e999
        message = str(exc).split(";")[0]
        raise WorkflowFormatError(f"{source}: unusable JSON number: {message}") from None
    check_depth(data, source)
    return data


def check_depth(data: Any, source: str = "workflow") -> None:
    """WorkflowFormatError if lists/dicts nest deeper than :data:`MAX_DEPTH` (checked without recursion)."""
    pending = [(data, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_DEPTH:
                raise WorkflowFormatError(f"{source}: JSON nested too deeply (at most {MAX_DEPTH} levels)")
            pending.extend((item, depth + 1) for item in (value.values() if isinstance(value, dict) else value))


def parse_text(text: str, source: str = "workflow") -> Workflow:
    """Parse workflow JSON text; malformed JSON becomes a one-line error with line and column."""
    return parse(decode_json(text, source), source)


def read_text(path: str | Path) -> str:
    """A UTF-8 text file's contents; an unreadable or non-UTF-8 file is a WorkflowFormatError saying which."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WorkflowFormatError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise WorkflowFormatError(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                                  "save the workflow as UTF-8") from None


def load(path: str | Path) -> Workflow:
    return parse_text(read_text(path), str(Path(path)))


def parse(data: Any, source: str = "workflow") -> Workflow:
    """Turn an already-decoded JSON document into a :class:`Workflow` (shape errors → WorkflowFormatError)."""
    check_depth(data, source)
    try:
        doc = WorkflowDoc.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'document'}: {e['msg']}" for e in exc.errors())
        raise WorkflowFormatError(f"{source}: not a graphflow workflow: {problems}") from None
    nodes = {
        node_id: NodeEntry(body.type, {k: _literal_or_link(v) for k, v in body.inputs.items()}, body.title)
        for node_id, body in doc.nodes.items()
    }
    return Workflow(nodes)


def _literal_or_link(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == LINK_KEYS and all(isinstance(v, str) for v in value.values()):
        return Link(value["from"], value["output"])
    return value


def canonical_json(value: Any) -> str:
    """Stable text for hashing: sorted keys, no whitespace, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str)
