"""Build workflows in Python with typed handles; the result is the same JSON a file would hold.

    g = Graph()
    x = g.add("Number", value=2)
    total = g.add("Add", a=x.value, bias=1)
    ...
    g.to_json()          # {"graphflow": 1, "nodes": {...}}
    g.run()              # through an Engine

An output handle knows its socket type, so wiring a TEXT output into a NUMBER input fails here, at build time.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from .errors import GraphflowError
from .registry import Registry, default_registry
from .types import is_compatible
from .documents import read_document
from .workflow import Link, NodeEntry, Workflow


class BuildError(GraphflowError, TypeError):
    """A wiring or literal mistake caught while building a graph."""


@dataclass(frozen=True)
class OutputHandle:
    node: str
    output: str
    type: str

    def link(self) -> Link:
        return Link(self.node, self.output)


class NodeHandle:
    def __init__(self, node_id: str, node_type: str, outputs: dict[str, str]):
        self.id, self.type, self._outputs = node_id, node_type, outputs

    def out(self, name: str) -> OutputHandle:
        if name not in self._outputs:
            raise BuildError(f"node {self.id} ({self.type}) has no output {name!r}; outputs: {list(self._outputs)}")
        return OutputHandle(self.id, name, self._outputs[name])

    __getitem__ = out

    def __getattr__(self, name: str) -> OutputHandle:
        if name.startswith("_"):
            raise AttributeError(name)
        return self.out(name)

    def __repr__(self) -> str:
        return f"<{self.type} {self.id}>"


class Graph:
    def __init__(self, registry: Registry | None = None):
        self.registry = registry or default_registry()
        self._nodes: dict[str, NodeEntry] = {}

    def add(self, node_type: str, id: str | None = None, title: str | None = None, **inputs: Any) -> NodeHandle:
        spec = self.registry.get(node_type)
        if spec is None:
            raise BuildError(f"unknown node type {node_type!r}")
        node_id = id or self._fresh_id(node_type)
        if node_id in self._nodes:
            raise BuildError(f"node id {node_id!r} is already used")
        entry = NodeEntry(node_type, {}, title)
        for name, value in inputs.items():
            entry.inputs[name] = self._check_input(node_id, spec, name, value)
        self._check_literals(node_id, spec, entry.literals())
        self._nodes[node_id] = entry
        return NodeHandle(node_id, node_type, spec.outputs)

    def node(self, node_id: str) -> NodeHandle:
        entry = self._nodes[node_id]
        return NodeHandle(node_id, entry.type, self.registry.get(entry.type).outputs if entry.type in self.registry else {})

    def workflow(self) -> Workflow:
        return Workflow({k: NodeEntry(v.type, dict(v.inputs), v.title) for k, v in self._nodes.items()})

    def to_json(self) -> dict[str, Any]:
        return self.workflow().to_json()

    @classmethod
    def from_json(cls, document: dict[str, Any], registry: Registry | None = None) -> "Graph":
        graph = cls(registry)
        graph._nodes = read_document(document, "workflow", graph.registry).nodes
        return graph

    def run(self, engine: Any = None, **options: Any):
        """Run through ``engine`` (a fresh :class:`~graphflow.execute.Engine` if none); returns its RunReport."""
        if engine is None:
            from .execute import Engine

            engine = Engine(self.registry)
        return engine.run(self.workflow(), **options)

    def _fresh_id(self, node_type: str) -> str:
        n = 1
        while f"{node_type}_{n}" in self._nodes:
            n += 1
        return f"{node_type}_{n}"

    def _check_input(self, node_id: str, spec: Any, name: str, value: Any) -> Any:
        if isinstance(value, NodeHandle):
            raise BuildError(f"{node_id}.{name}: pass one output of {value!r}, e.g. {value.id}.<output>")
        if name in spec.sockets:
            want = spec.sockets[name].type
            if not isinstance(value, OutputHandle):
                raise BuildError(f"{node_id}.{name}: expects a {want} output handle, received {type(value).__name__}")
            if not is_compatible(value.type, want):
                raise BuildError(f"{node_id}.{name}: expects {want}, received {value.type} from {value.node}.{value.output}")
            return value.link()
        if name not in spec.literal_names:
            raise BuildError(f"{node_id}: {spec.name} has no input {name!r}; inputs: {list(spec.input_order)}")
        if isinstance(value, OutputHandle):
            raise BuildError(f"{node_id}.{name}: takes a literal value, received a link from {value.node}.{value.output}")
        return value

    def _check_literals(self, node_id: str, spec: Any, literals: dict[str, Any]) -> None:
        try:
            spec.literals.model_validate(literals)
        except ValidationError as exc:
            wrong = [e for e in exc.errors() if e["type"] != "missing"]
            if wrong:
                text = "; ".join(f"{node_id}.{e['loc'][0]}: {e['msg']}" for e in wrong)
                raise BuildError(text) from None
