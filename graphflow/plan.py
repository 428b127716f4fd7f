"""From a checked workflow to an execution plan: which nodes are needed, in what order, under which keys."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import networkx as nx

from .cache import content_key
from .errors import NodeFailed, NodeInputError
from .validate import CheckedWorkflow, link_graph


@dataclass(frozen=True)
class Plan:
    order: tuple[str, ...]  # needed nodes, topologically sorted (ties broken by node id, so runs are repeatable)
    keys: dict[str, str]  # node id → content key of its outputs
    link_keys: dict[str, str]  # node id → the key linked nodes see (without its neutral inputs)


def make_plan(checked: CheckedWorkflow, settings: Any) -> Plan:
    graph = link_graph(checked.workflow)
    needed = set(checked.outputs)
    for node_id in checked.outputs:
        needed |= nx.ancestors(graph, node_id)
    order = tuple(nx.lexicographical_topological_sort(graph.subgraph(needed)))
    run_nonce = uuid.uuid4().hex  # makes cache="never" nodes (and what depends on them) unique to this run
    keys: dict[str, str] = {}
    link_keys: dict[str, str] = {}
    for node_id in order:
        node = checked.nodes[node_id]
        spec = node.spec
        parts: dict[str, Any] = {
            "type": spec.name,
            "version": spec.version,
            "literals": node.literals,
            "links": {name: [link_keys[link.node], link.output] for name, link in sorted(node.links.items())},
        }
        if spec.fingerprint is not None:
            parts["fingerprint"] = _fingerprint(node_id, spec, node.literals, settings)
        if spec.cache == "never":
            parts["nonce"] = run_nonce
        keys[node_id] = content_key(parts)
        neutral = set(spec.neutral)
        link_keys[node_id] = content_key({**parts, "literals": {k: v for k, v in node.literals.items() if k not in neutral}}) \
            if neutral else keys[node_id]
    return Plan(order, keys, link_keys)


def _fingerprint(node_id: str, spec: Any, literals: dict[str, Any], settings: Any) -> str:
    try:
        return str(spec.fingerprint(literals, settings))
    except NodeInputError as exc:
        raise NodeFailed(node_id, spec.name, exc.describe(), "NodeInputError", exc.input) from None
    except Exception as exc:  # a fingerprint that cannot be taken means the input is unusable
        raise NodeFailed(node_id, spec.name, str(exc), type(exc).__name__) from None
