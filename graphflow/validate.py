"""Check a workflow against the registry before anything runs, collecting every problem at once."""
from __future__ import annotations

import difflib
from dataclasses import dataclass, replace
from typing import Any, Iterable

import networkx as nx
from pydantic import ValidationError

from .errors import Issue, WorkflowInvalid
from .node import NodeSpec
from .registry import Registry
from .types import is_compatible
from .workflow import Link, Workflow


@dataclass(frozen=True)
class CheckedNode:
    """A node that passed validation: its spec, its literal inputs with defaults filled in, its links."""

    id: str
    spec: NodeSpec
    literals: dict[str, Any]
    links: dict[str, Link]


@dataclass(frozen=True)
class CheckedWorkflow:
    workflow: Workflow
    nodes: dict[str, CheckedNode]
    outputs: tuple[str, ...]  # the output nodes to produce


def validate(workflow: Workflow, registry: Registry, outputs: Iterable[str] | None = None,
             settings: Any = None) -> CheckedWorkflow:
    """Return the checked workflow, or raise :class:`WorkflowInvalid` listing every issue found.

    With ``settings`` (where files are looked up) every needed node's named files are checked too."""
    issues: list[Issue] = []
    checked: dict[str, CheckedNode] = {}
    for node_id, entry in workflow.nodes.items():
        spec = registry.get(entry.type)
        if spec is None:
            close = difflib.get_close_matches(entry.type, registry.names(), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            issues.append(Issue(node_id, None, f"unknown node type{hint}", "a registered node type", entry.type, code="unknown_node_type"))
            continue
        node_issues = _check_inputs(node_id, entry.inputs, spec, workflow, registry)
        literals = _check_literals(node_id, entry.literals(), spec, node_issues)
        issues += node_issues
        if not node_issues:
            checked[node_id] = CheckedNode(node_id, spec, literals, entry.links())
    issues += _check_cycles(workflow)
    requested = _check_outputs(workflow, registry, outputs, issues)
    if settings is not None:
        issues += _check_files(workflow, checked, requested, settings)
    if issues:
        raise WorkflowInvalid([with_node_type(issue, workflow) for issue in issues])
    return CheckedWorkflow(workflow, checked, requested)


def with_node_type(issue: Issue, workflow: Workflow) -> Issue:
    """The issue naming its node's type too (messages then say which kind of node an id is)."""
    entry = workflow.nodes.get(issue.node) if issue.node is not None else None
    return replace(issue, node_type=entry.type) if entry is not None and issue.node_type is None else issue


def _check_inputs(node_id: str, inputs: dict[str, Any], spec: NodeSpec, workflow: Workflow, registry: Registry) -> list[Issue]:
    issues = []
    known = set(spec.sockets) | set(spec.literal_names)
    for name in inputs:
        if name not in known:
            issues.append(Issue(node_id, name, "unknown input", f"one of {sorted(known)}", name, code="unknown_input"))
    for name, socket in spec.sockets.items():
        value = inputs.get(name)
        if value is None:
            if not socket.optional:
                issues.append(Issue(node_id, name, "missing required input", f"a link from a {socket.type} output", None, code="missing_input"))
            continue
        if not isinstance(value, Link):
            issues.append(Issue(node_id, name, "this input takes a link, not a literal", f'{{"from": NODE, "output": NAME}} of type {socket.type}', value, code="wrong_input_kind"))
            continue
        issues += _check_link(node_id, name, value, socket.type, workflow, registry)
    for name in spec.literal_names:
        if isinstance(inputs.get(name), Link):
            issues.append(Issue(node_id, name, "this input takes a literal value, not a link", "a literal", inputs[name].to_json(), code="wrong_input_kind"))
    return issues


def _check_link(node_id: str, name: str, link: Link, want: str, workflow: Workflow, registry: Registry) -> list[Issue]:
    source = workflow.nodes.get(link.node)
    if source is None:
        return [Issue(node_id, name, "link to a node that does not exist", f"one of {sorted(workflow.nodes)}", link.node, code="missing_link")]
    source_spec = registry.get(source.type)
    if source_spec is None:
        return []  # already reported on the source node
    have = source_spec.output_type(link.output)
    if have is None:
        return [Issue(node_id, name, f"node {link.node} ({source.type}) has no output {link.output!r}", f"one of {list(source_spec.outputs)}", link.output, code="missing_link")]
    if not is_compatible(have, want):
        return [Issue(node_id, name, f"type mismatch on link from {link.node}.{link.output}", want, have, code="type_mismatch")]
    return []


def _check_literals(node_id: str, given: dict[str, Any], spec: NodeSpec, issues: list[Issue]) -> dict[str, Any]:
    values = {k: v for k, v in given.items() if k in spec.literal_names}
    try:
        return dict(spec.literals.model_validate(values))
    except ValidationError as exc:
        properties = spec.literals.model_json_schema().get("properties", {})
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else None
            received = values.get(name) if error["type"] != "missing" else None
            schema = properties.get(name, {})
            issues.append(Issue(node_id, name, literal_message(error, schema, received), describe_expected(schema), received,
                                code="missing_input" if error["type"] == "missing" else "bad_value"))
        return {}


def literal_message(error: dict[str, Any], schema: dict[str, Any], received: Any) -> str:
    """pydantic's message, except for a value outside a Literal/enum: pydantic lists every choice there, which
    ``expected`` already does; say instead which choice is nearest."""
    choices = schema.get("enum") or [c for option in schema.get("anyOf", []) for c in option.get("enum", [])]
    if error["type"] not in ("literal_error", "enum") or not choices:
        return error["msg"]
    by_text = {str(choice).lower(): choice for choice in choices}
    close = difflib.get_close_matches(str(received).lower(), list(by_text), n=1, cutoff=0.5)
    return f"not one of the {len(choices)} choices" + (f"; did you mean {by_text[close[0]]!r}?" if close else "")


def describe_expected(schema: dict[str, Any]) -> str:
    """Human text for what a literal input accepts, from its JSON Schema ("integer >= 64, multiple of 8")."""
    if "enum" in schema:
        return f"one of {schema['enum']}"
    if "anyOf" in schema:
        return " or ".join(describe_expected(s) for s in schema["anyOf"])
    if "const" in schema:
        return repr(schema["const"])
    parts = [schema.get("type", "value")]
    for key, text in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<"),
                      ("multipleOf", "multiple of"), ("minLength", "length >="), ("maxLength", "length <=")):
        if key in schema:
            parts.append(f"{text} {schema[key]}")
    return ", ".join(parts)


def _check_files(workflow: Workflow, checked: dict[str, CheckedNode], requested: tuple[str, ...], settings: Any) -> list[Issue]:
    """Ask each node that produces a requested output and declares a ``preflight`` whether its named files exist."""
    graph = link_graph(workflow)
    needed = set()
    for node_id in requested:
        if node_id in graph:
            needed |= {node_id} | nx.ancestors(graph, node_id)
    issues = []
    for node_id, node in checked.items():
        if node_id not in needed or node.spec.preflight is None:
            continue
        try:
            problems = list(node.spec.preflight(node.literals, settings))
        except Exception as exc:  # a node pack's broken check must not end validation with a traceback
            issues.append(Issue(node_id, None, f"could not check the files it names: {exc!r}", "a working preflight", None,
                                code="missing_file"))
            continue
        for problem in problems:
            if problem.available is None:
                issues.append(Issue(node_id, problem.input, problem.message, problem.expected, problem.received, code="bad_value"))
                continue
            nearest = difflib.get_close_matches(str(problem.received), problem.available, n=3, cutoff=0.5)
            hint = f"; did you mean {nearest[0]!r}?" if nearest else ""
            issues.append(Issue(node_id, problem.input, problem.message + hint,
                                short_list(nearest, problem.available) or "an existing file (there are none)", problem.received,
                                code="missing_file"))
    return issues


def short_list(first: list[str], names: Iterable[str], limit: int = 8) -> list[str]:
    """``first``, then the other names, cut at ``limit`` with a "... N more" entry."""
    ordered = list(dict.fromkeys([*first, *names]))
    if len(ordered) <= limit:
        return ordered
    return ordered[:limit] + [f"... {len(ordered) - limit} more"]


def link_graph(workflow: Workflow) -> nx.DiGraph:
    """Edges run from the source node to the node whose input it feeds."""
    graph = nx.DiGraph()
    graph.add_nodes_from(workflow.nodes)
    for node_id, entry in workflow.nodes.items():
        for link in entry.links().values():
            if link.node in workflow.nodes:
                graph.add_edge(link.node, node_id)
    return graph


def _check_cycles(workflow: Workflow) -> list[Issue]:
    graph = link_graph(workflow)
    issues = []
    for component in nx.strongly_connected_components(graph):
        loop = graph.subgraph(component)
        if loop.number_of_edges() == 0:
            continue
        cycle = [u for u, _ in nx.find_cycle(loop)]
        path = " → ".join(cycle + [cycle[0]])
        issues.append(Issue(cycle[0], None, f"cycle: {path}", "an acyclic graph", path, code="cycle"))
    return issues


def _check_outputs(workflow: Workflow, registry: Registry, outputs: Iterable[str] | None, issues: list[Issue]) -> tuple[str, ...]:
    output_nodes = [i for i, e in workflow.nodes.items() if (s := registry.get(e.type)) is not None and s.output_node]
    if outputs is None:
        if not output_nodes and not any(i.code == "unknown_node_type" for i in issues):
            example = f" (e.g. {registry.output_example})" if registry.output_example else ""
            issues.append(Issue(None, None, "workflow has no output node", f"at least one output node{example}", "none",
                                code="no_output"))
        return tuple(output_nodes)
    requested = tuple(outputs)
    for node_id in requested:
        if node_id not in workflow.nodes:
            issues.append(Issue(node_id, None, "requested output node does not exist", f"one of {output_nodes}", node_id, code="not_an_output"))
        elif node_id not in output_nodes and registry.get(workflow.nodes[node_id].type) is not None:
            issues.append(Issue(node_id, None, "requested output is not an output node", f"one of {output_nodes}", workflow.nodes[node_id].type, code="not_an_output"))
    if not requested:
        issues.append(Issue(None, None, "no output nodes requested", "at least one output node", "[]", code="no_output"))
    return requested
