"""ComfyUI's API format, both ways.

An API prompt is ``{node_id: {"class_type": X, "inputs": {name: value}, "_meta": {"title": ...}}}``; an input's
value is a literal, or a link ``[source_id, output_index]`` (a two-item list whose second item is an integer).
It reads as a graphflow workflow node for node: ids are kept (so every validation error names ComfyUI's id),
class ``X`` is the node type ``comfy.X``, and a link's output index is that type's output at that position
(pack nodes declare their outputs in ComfyUI's order). :func:`workflow_to_prompt` goes back, for the ``prompt``
chunk of a PNG that ComfyUI can load.
"""
from __future__ import annotations

from typing import Any

from graphflow.errors import WorkflowFormatError
from graphflow.registry import Registry
from graphflow.workflow import Link, NodeEntry, Workflow

PREFIX = "comfy."  # ComfyUI's class X is graphflow's node type comfy.X


def node_type(class_type: str) -> str:
    return PREFIX + class_type


def class_type(graphflow_type: str) -> str | None:
    """ComfyUI's class name of a pack node type, or None for a type that is not ComfyUI's."""
    return graphflow_type[len(PREFIX):] if graphflow_type.startswith(PREFIX) else None


def is_api_prompt(document: Any) -> bool:
    """Whether a decoded document has the API format's shape: a non-empty object of nodes with a class_type."""
    return (isinstance(document, dict) and bool(document)
            and all(isinstance(body, dict) and "class_type" in body for body in document.values()))


def is_link(value: Any) -> bool:
    """ComfyUI's rule: a two-item list whose second item is an integer is a link, never a literal."""
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int))
            and isinstance(value[1], int) and not isinstance(value[1], bool))


def read_api_prompt(document: Any, source: str, registry: Registry) -> Workflow | None:
    """The document reader the pack declares: an API prompt as a Workflow, None for any other document."""
    return prompt_to_workflow(document, source, registry) if is_api_prompt(document) else None


def prompt_to_workflow(prompt: dict[str, Any], source: str, registry: Registry) -> Workflow:
    """The graphflow workflow of an API prompt. Every unsupported class and malformed node is named at once."""
    problems: list[str] = []
    nodes: dict[str, NodeEntry] = {}
    for raw_id, body in prompt.items():
        node_id, name = str(raw_id), body.get("class_type")
        inputs = body.get("inputs", {})
        if not isinstance(name, str) or not isinstance(inputs, dict):
            problems.append(f"node {node_id}: class_type must be a string and inputs an object")
            continue
        if node_type(name) not in registry:
            problems.append(unsupported(name, node_id))
            continue
        meta = body.get("_meta")
        title = meta.get("title") if isinstance(meta, dict) and isinstance(meta.get("title"), str) else None
        entry = NodeEntry(node_type(name), {}, title)
        for input_name, value in inputs.items():
            if is_link(value):
                link, problem = _link(prompt, registry, node_id, name, input_name, value)
                if problem:
                    problems.append(problem)
                entry.inputs[input_name] = link
            else:
                entry.inputs[input_name] = value
        nodes[node_id] = entry
    if problems:
        raise WorkflowFormatError(f"{source}: " + "; ".join(problems))
    return Workflow(nodes)


def unsupported(class_name: str, node_id: str) -> str:
    return f"ComfyUI node {class_name!r} (id {node_id}) is not supported by graphflow"


def _link(prompt: dict[str, Any], registry: Registry, node_id: str, class_name: str, input_name: str,
          value: list) -> tuple[Link, str | None]:
    source_id, index = str(value[0]), value[1]
    source = prompt.get(source_id, prompt.get(value[0]))
    if not isinstance(source, dict):
        return Link(source_id, str(index)), None  # validation names the missing node, with the others
    spec = registry.get(node_type(str(source.get("class_type"))))
    if spec is None:
        return Link(source_id, str(index)), None  # the source's own entry reports it unsupported
    outputs = list(spec.outputs)
    if not 0 <= index < len(outputs):
        listed = ", ".join(f"{i} {name}" for i, name in enumerate(outputs)) or "none"
        return Link(source_id, str(index)), (
            f"node {node_id} ({class_name}) input {input_name!r} links to output {index} of node {source_id} "
            f"({source['class_type']}), which has outputs {listed}")
    return Link(source_id, outputs[index]), None


def workflow_to_prompt(workflow: Workflow | dict[str, Any], registry: Registry) -> dict[str, Any] | None:
    """The API prompt of a workflow made only of pack nodes (a graphflow document or a Workflow), or None when
    some node is not ComfyUI's (ComfyUI could not load it)."""
    if isinstance(workflow, dict):
        from graphflow.workflow import parse

        workflow = parse(workflow)
    prompt: dict[str, Any] = {}
    for node_id, entry in workflow.nodes.items():
        name, spec = class_type(entry.type), registry.get(entry.type)
        if name is None or spec is None:
            return None
        inputs: dict[str, Any] = {}
        for input_name, value in entry.inputs.items():
            if isinstance(value, Link):
                source = registry.get(workflow.nodes[value.node].type) if value.node in workflow.nodes else None
                if source is None or value.output not in source.outputs:
                    return None
                inputs[input_name] = [value.node, list(source.outputs).index(value.output)]
            else:
                inputs[input_name] = value
        prompt[node_id] = {"inputs": inputs, "class_type": name, "_meta": {"title": entry.title or name}}
    return prompt
