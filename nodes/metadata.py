"""What an output file says about how it was made: the AUTOMATIC1111 "parameters" text of a PNG."""
# No `from __future__ import annotations`: node modules are imported as they are, and this one imports them.

from typing import Any

from graphflow.node import spec_of

from .sampling import SAMPLERS, AddNoise, Sample, Schedule
from .text import TextEncode, Tokenize


def a1111_parameters(workflow: dict[str, Any] | None, save_node: str | None, width: int, height: int) -> str:
    """The A1111 "parameters" text for an image saved by ``save_node``, read off the workflow graph.

    Follows links upstream from the save node to the nearest Sample node, then from there to the prompts,
    the schedule, the seed and the checkpoint. Whatever cannot be found is left out."""
    nodes = (workflow or {}).get("nodes") or {}
    sample = _nearest_upstream(nodes, _inputs_of(nodes, save_node), "Sample")
    noised = _nearest_upstream(nodes, [_linked(nodes, sample, "latent")], "AddNoise")
    schedule = _nearest_upstream(nodes, [_linked(nodes, noised, "schedule")], "Schedule")
    checkpoint = _nearest_upstream(nodes, [_linked(nodes, sample, "model")], "LoadCheckpoint")
    seed = _literal(nodes, sample, "seed")
    if seed is None or seed == -1:  # -1 continues AddNoise's generator, whose seed is the one that counts
        seed = _literal(nodes, noised, "seed")
    denoise = _literal(nodes, schedule, "denoise")
    fields = {
        "Steps": _literal(nodes, schedule, "steps"),
        "Sampler": _a1111_sampler(_literal(nodes, schedule, "sampler")),
        "CFG scale": _literal(nodes, sample, "cfg"),
        "Seed": seed,
        "Size": f"{width}x{height}",
        "Model": _literal(nodes, checkpoint, "name"),
        "Denoising strength": denoise if isinstance(denoise, (int, float)) and denoise < 1 else None,
    }
    lines = []
    prompt = _prompt_text(nodes, _linked(nodes, sample, "positive"))
    if prompt is not None:
        lines.append(prompt)
    negative = _prompt_text(nodes, _linked(nodes, sample, "negative"))
    if negative:
        lines.append(f"Negative prompt: {negative}")
    lines.append(", ".join(f"{key}: {value}" for key, value in fields.items() if value is not None))
    return "\n".join(lines)


def _a1111_sampler(name: Any) -> Any:
    return SAMPLERS[name].a1111 if isinstance(name, str) and name in SAMPLERS else name


def _inputs_of(nodes: dict, node_id: str | None) -> list[str]:
    """Ids of the nodes linked into ``node_id``."""
    inputs = ((nodes.get(node_id) or {}).get("inputs") or {}) if node_id else {}
    return [v["from"] for _, v in sorted(inputs.items()) if isinstance(v, dict) and isinstance(v.get("from"), str)]


def _linked(nodes: dict, node_id: str | None, input_name: str) -> str | None:
    """Id of the node linked into ``node_id.input_name``, or None."""
    value = ((nodes.get(node_id) or {}).get("inputs") or {}).get(input_name) if node_id else None
    return value.get("from") if isinstance(value, dict) and isinstance(value.get("from"), str) else None


def _nearest_upstream(nodes: dict, starts: list[str | None], node_type: str) -> str | None:
    """Breadth-first up the links from ``starts`` (themselves included) to the first node of ``node_type``."""
    seen: set[str] = set()
    queue = list(starts)
    while queue:
        node_id = queue.pop(0)
        if node_id is None or node_id in seen or node_id not in nodes:
            continue
        seen.add(node_id)
        if nodes[node_id].get("type") == node_type:
            return node_id
        queue.extend(_inputs_of(nodes, node_id))
    return None


def _literal(nodes: dict, node_id: str | None, name: str) -> Any:
    """A literal input of a node as the workflow gives it, else the node type's default; None if neither."""
    entry = nodes.get(node_id) if node_id else None
    if not isinstance(entry, dict):
        return None
    inputs = entry.get("inputs") or {}
    value = inputs[name] if name in inputs else _default_of(entry.get("type"), name)
    return None if isinstance(value, dict) else value


def _default_of(node_type: Any, name: str) -> Any:
    function = {"Sample": Sample, "AddNoise": AddNoise, "Schedule": Schedule, "Tokenize": Tokenize, "TextEncode": TextEncode}.get(node_type)
    field = spec_of(function).literals.model_fields.get(name) if function else None
    return None if field is None or field.is_required() else field.default


def _prompt_text(nodes: dict, node_id: str | None) -> str | None:
    """The text behind a conditioning: TextEncode's own, or the Tokenize feeding a CLIPTextEncode."""
    encoder = _nearest_upstream(nodes, [node_id], "TextEncode") or _nearest_upstream(nodes, [node_id], "Tokenize")
    text = _literal(nodes, encoder, "text")
    return text if isinstance(text, str) else None
