"""ComfyUI's UI format (what its editor saves: ``nodes`` + ``links``, each node's ``widgets_values``) turned into its
API format, as ComfyUI's frontend does before it queues a workflow; :mod:`.api_format` reads the result.

The rules, after the format's public description and the frontend's behaviour:

- ``widgets_values`` follows the node type's widget (literal) inputs in definition order, required then optional
  (the pack's ``input_order``). A seed input (``seed``, ``noise_seed``) is followed by one extra UI-only value, its
  ``control_after_generate`` ("fixed", "increment", "decrement", "randomize"), which is skipped. Values past the
  last widget belong to UI-only widgets (LoadImage's upload button, ...) and are ignored; a workflow saved before
  an input existed has fewer values, and the missing ones take their defaults. A ``widgets_values`` object maps
  names to values.
- A widget converted to an input and linked takes the link (or, from a PrimitiveNode, the primitive's value).
- Reroute nodes pass their input through; PrimitiveNode values go into the inputs they feed; Note and
  MarkdownNote nodes are ignored.
- Muted nodes (mode 2) are dropped, and so are the links out of them (a required input left unlinked is then
  reported by validation). Bypassed nodes (mode 4) are dropped and rewired: what fed them flows on to what they
  fed, through the bypassed node's input of the same type (the input at the output's slot when its type
  matches, else the first input of that type); with no such input the link is dropped.
- Group nodes and subgraphs are refused with a message naming them (convert them back to nodes in ComfyUI).
"""
from __future__ import annotations

from typing import Any

from graphflow.errors import WorkflowFormatError
from graphflow.registry import Registry
from graphflow.workflow import Workflow

from .api_format import node_type, prompt_to_workflow, unsupported

MUTED, BYPASSED = 2, 4
IGNORED_TYPES = frozenset({"Note", "MarkdownNote"})
REROUTE, PRIMITIVE = "Reroute", "PrimitiveNode"
SEED_INPUTS = frozenset({"seed", "noise_seed"})
SEED_CONTROLS = frozenset({"fixed", "increment", "decrement", "randomize"})


def is_ui_workflow(document: Any) -> bool:
    return isinstance(document, dict) and isinstance(document.get("nodes"), list) and "graphflow" not in document


def read_ui_workflow(document: Any, source: str, registry: Registry) -> Workflow | None:
    """The document reader the pack declares: a UI workflow as a Workflow, None for any other document."""
    if not is_ui_workflow(document):
        return None
    return prompt_to_workflow(ui_to_prompt(document, source, registry), source, registry)


def ui_to_prompt(document: dict[str, Any], source: str, registry: Registry) -> dict[str, Any]:
    """The API prompt equivalent to a UI workflow; every unsupported or malformed node is named at once."""
    graph = _Graph(document, source)
    problems: list[str] = []
    prompt: dict[str, Any] = {}
    for node_id, node in graph.nodes.items():
        kind = node.get("type")
        if kind in IGNORED_TYPES or kind in (REROUTE, PRIMITIVE) or node.get("mode", 0) in (MUTED, BYPASSED):
            continue
        if graph.is_group(kind):
            problems.append(f"ComfyUI node {kind!r} (id {node_id}) is a group node or subgraph, which graphflow does not "
                            "flatten: convert it back to nodes in ComfyUI (Convert to nodes / Unpack subgraph) and save again")
            continue
        spec = registry.get(node_type(str(kind)))
        if spec is None:
            problems.append(unsupported(str(kind), node_id))
            continue
        widgets = [name for name in spec.input_order if name in spec.literal_names]
        inputs = widget_inputs(node.get("widgets_values"), widgets)
        for slot in node.get("inputs") or []:
            if not isinstance(slot, dict) or slot.get("link") is None or not isinstance(slot.get("name"), str):
                continue
            resolved = graph.resolve(slot["link"])
            if resolved is None:
                inputs.pop(slot["name"], None)  # fed by a dropped node: left unset, as ComfyUI leaves it
            else:
                inputs[slot["name"]] = resolved
        title = node.get("title")
        prompt[node_id] = {"inputs": inputs, "class_type": kind, "_meta": {"title": title if isinstance(title, str) else kind}}
    if problems:
        raise WorkflowFormatError(f"{source}: " + "; ".join(problems))
    return prompt


def widget_inputs(values: Any, widgets: list[str]) -> dict[str, Any]:
    """The literal inputs a node's ``widgets_values`` gives, by the node type's widget order."""
    if isinstance(values, dict):
        return {name: values[name] for name in widgets if name in values}
    values = values if isinstance(values, list) else []
    inputs: dict[str, Any] = {}
    position = 0
    for name in widgets:
        if position >= len(values):
            break
        inputs[name] = values[position]
        position += 1
        if name in SEED_INPUTS and position < len(values) and values[position] in SEED_CONTROLS:
            position += 1  # the seed's control_after_generate: UI-only
    return inputs


class _Graph:
    """A UI workflow's nodes by id and links by id, and how a link resolves through the UI-only nodes."""

    def __init__(self, document: dict[str, Any], source: str):
        self.nodes: dict[str, dict[str, Any]] = {}
        for node in document["nodes"]:
            if not isinstance(node, dict) or "id" not in node or not isinstance(node.get("type"), str):
                raise WorkflowFormatError(f"{source}: every UI-format node needs an id and a type, not {str(node)[:80]}")
            self.nodes[str(node["id"])] = node
        self.links: dict[Any, tuple[str, int]] = {}
        for link in document.get("links") or []:
            if isinstance(link, list) and len(link) >= 5:  # [id, origin_id, origin_slot, target_id, target_slot, type]
                self.links[link[0]] = (str(link[1]), link[2])
            elif isinstance(link, dict) and {"id", "origin_id", "origin_slot"} <= set(link):
                self.links[link["id"]] = (str(link["origin_id"]), link["origin_slot"])
            else:
                raise WorkflowFormatError(f"{source}: a UI-format link is [id, origin_id, origin_slot, target_id, "
                                          f"target_slot, type], not {str(link)[:80]}")
        definitions = document.get("definitions") if isinstance(document.get("definitions"), dict) else {}
        extra = document.get("extra") if isinstance(document.get("extra"), dict) else {}
        self.subgraphs = {s.get("id") for s in definitions.get("subgraphs") or [] if isinstance(s, dict)}
        self.group_names = set(extra.get("groupNodes") or {})

    def is_group(self, kind: str) -> bool:
        for separator in (">", "/"):
            prefix, found, name = kind.partition(separator)
            if found and prefix == "workflow" and (name in self.group_names or not self.group_names):
                return True
        return kind in self.subgraphs

    def resolve(self, link_id: Any) -> list | Any | None:
        """What a link delivers once UI-only and dropped nodes are gone: ``[origin_id, slot]``, a primitive's
        value, or None when nothing does."""
        seen = set()
        while link_id in self.links and link_id not in seen:
            seen.add(link_id)
            origin_id, slot = self.links[link_id]
            origin = self.nodes.get(origin_id)
            if origin is None or origin.get("mode", 0) == MUTED or origin.get("type") in IGNORED_TYPES:
                return None
            if origin.get("type") == PRIMITIVE:
                values = origin.get("widgets_values")
                return values[0] if isinstance(values, list) and values else None
            if origin.get("type") == REROUTE:
                link_id = _input_link(origin, 0)
            elif origin.get("mode", 0) == BYPASSED:
                link_id = _bypass_input_link(origin, slot)
            else:
                return [origin_id, slot]
        return None


def _input_link(node: dict[str, Any], index: int) -> Any:
    inputs = node.get("inputs") or []
    return inputs[index].get("link") if index < len(inputs) and isinstance(inputs[index], dict) else None


def _bypass_input_link(node: dict[str, Any], slot: int) -> Any:
    """The link into a bypassed node that stands for its output ``slot``: the input at the same position when its
    type matches the output's, else the first input of that type."""
    outputs = node.get("outputs") or []
    wanted = outputs[slot].get("type") if slot < len(outputs) and isinstance(outputs[slot], dict) else None
    inputs = [i for i in node.get("inputs") or [] if isinstance(i, dict)]
    if slot < len(inputs) and inputs[slot].get("type") == wanted:
        return inputs[slot].get("link")
    return next((i.get("link") for i in inputs if i.get("type") == wanted), None)
