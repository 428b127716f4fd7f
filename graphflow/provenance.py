"""What produced an output node's inputs: the checked nodes upstream of it, as they ran.

The engine hands an output node (``ctx.graph``) a :class:`Provenance`: every node its inputs depend on, with
its literal inputs as validation resolved them (defaults filled in from the node's declaration, values
substituted before planning included), its links with the socket type each carries, and the values those
nodes computed. Metadata writers (the parameters text of a PNG, ...) are small functions over it instead of
re-reading the workflow JSON by input names.

Nothing here knows what the node types mean; a node pack looks for its own types by name.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

if TYPE_CHECKING:
    from .validate import CheckedWorkflow


@dataclass(frozen=True)
class Source:
    """Where a linked input comes from: ``node``'s output ``output``, of socket type ``type``."""

    node: str
    output: str
    type: str


@dataclass(frozen=True)
class UpstreamNode:
    """One checked node: its type, resolved literals and linked inputs (unlinked optional sockets absent)."""

    id: str
    type: str
    literals: Mapping[str, Any]
    links: Mapping[str, Source]


class Provenance:
    """The output node ``target`` and every node upstream of it, with the values they produced."""

    def __init__(self, target: str, nodes: Mapping[str, UpstreamNode], values: Mapping[str, Mapping[str, Any]],
                 document: dict[str, Any]):
        self.target = target
        self.nodes = dict(nodes)
        self._values = values
        self.document = document  # the whole workflow as run: its JSON with the resolved literals

    @classmethod
    def of(cls, checked: "CheckedWorkflow", target: str, values: Mapping[str, Mapping[str, Any]]) -> "Provenance":
        nodes: dict[str, UpstreamNode] = {}
        pending = [target]
        while pending:
            node_id = pending.pop()
            if node_id in nodes:
                continue
            node = checked.nodes[node_id]
            links = {name: Source(link.node, link.output, checked.nodes[link.node].spec.output_type(link.output) or "")
                     for name, link in sorted(node.links.items())}
            nodes[node_id] = UpstreamNode(node_id, node.spec.name, dict(node.literals), links)
            pending += [source.node for source in links.values()]
        return cls(target, nodes, values, as_run(checked))

    @property
    def output_node(self) -> UpstreamNode:
        return self.nodes[self.target]

    def source(self, node: UpstreamNode | str, input_name: str) -> UpstreamNode | None:
        """The node linked into ``node.input_name``, or None when nothing is linked there."""
        link = self._node(node).links.get(input_name)
        return self.nodes[link.node] if link else None

    def value(self, node: UpstreamNode | str, output: str) -> Any:
        """What ``node`` computed on ``output`` in this run (shared with the cache: read it, never change it)."""
        return self._values[self._node(node).id][output]

    def upstream(self, node: UpstreamNode | str, input_name: str | None = None,
                 follow: Callable[[UpstreamNode, str, Source], bool] | None = None) -> Iterator[UpstreamNode]:
        """Nodes upstream of ``node`` (of its input ``input_name`` only, if given), nearest first.

        Breadth-first over the links, each node once, inputs in name order; ``follow(node, input, source)``
        decides which links to go up (all by default)."""
        start = self._node(node)
        first = [(name, link) for name, link in start.links.items() if input_name in (None, name)]
        queue = deque((start, name, link) for name, link in first)
        seen: set[str] = set()
        while queue:
            below, name, link = queue.popleft()
            if link.node in seen or (follow is not None and not follow(below, name, link)):
                continue
            seen.add(link.node)
            above = self.nodes[link.node]
            yield above
            queue.extend((above, n, source) for n, source in above.links.items())

    def nearest(self, node: UpstreamNode | str, node_type: str, input_name: str | None = None,
                follow: Callable[[UpstreamNode, str, Source], bool] | None = None) -> UpstreamNode | None:
        """The first node of type ``node_type`` upstream of ``node`` (see :meth:`upstream`), or None."""
        return next((n for n in self.upstream(node, input_name, follow) if n.type == node_type), None)

    def _node(self, node: UpstreamNode | str) -> UpstreamNode:
        return self.nodes[node] if isinstance(node, str) else node


def as_run(checked: "CheckedWorkflow") -> dict[str, Any]:
    """The workflow's JSON with every literal it gives replaced by the value that ran (a drawn seed, ...)."""
    document = checked.workflow.to_json()
    for node_id, body in document["nodes"].items():
        node = checked.nodes.get(node_id)
        if node is not None:
            body["inputs"] = {name: node.literals.get(name, value) for name, value in body["inputs"].items()}
    return document
