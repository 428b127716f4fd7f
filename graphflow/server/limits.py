"""What one request may ask of the server, checked before a job is queued.

The checks are generic: they look at literal input *names* (any node with a ``steps`` literal is bounded by
``max_literal["steps"]``) and at nodes that have both ``width`` and ``height`` literals (their pixel count times
``batch_size``), so node packs are covered without the server knowing them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..validate import CheckedWorkflow

DEFAULT_MAX_LITERAL = {"steps": 200, "batch_size": 16}


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 1024 * 1024  # a JSON request body; bigger → 413
    max_upload_bytes: int = 16 * 1024 * 1024  # one uploaded image file; bigger → 413
    max_upload_pixels: int = 4096 * 4096
    max_nodes: int = 500
    max_queued: int = 1000  # jobs waiting; more → 429
    max_repeat: int = 100  # jobs one POST /jobs may ask for with "repeat"
    max_pixels: int = 2048 * 2048 * 4  # width × height × batch_size of any node with width and height literals
    max_literal: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MAX_LITERAL))


def issue(input_name: str | None, message: str, expected: Any, received: Any) -> dict[str, Any]:
    """One entry of a ``node_errors`` list (the same shape validation errors have)."""
    return {"input": input_name, "message": message, "expected": expected, "received": received}


def check_size(node_count: int, limits: Limits) -> dict[str, list[dict[str, Any]]]:
    if node_count > limits.max_nodes:
        return {"": [issue(None, "too many nodes", f"at most {limits.max_nodes} nodes", node_count)]}
    return {}


def check_literals(checked: CheckedWorkflow, limits: Limits) -> dict[str, list[dict[str, Any]]]:
    """Over-limit literal inputs by node id. Uses the checked literals, so defaults count too."""
    problems: dict[str, list[dict[str, Any]]] = {}
    for node_id, node in checked.nodes.items():
        values = node.literals
        found = [issue(name, f"{name} is above this server's limit", f"at most {limit}", values[name])
                 for name, limit in limits.max_literal.items() if _number(values.get(name)) > limit]
        pixels = _pixels(values)
        if pixels > limits.max_pixels:
            found.append(issue("width", "image too large for this server (width × height × batch_size)",
                               f"at most {limits.max_pixels} pixels", pixels))
        if found:
            problems[node_id] = found
    return problems


def _number(value: Any) -> float:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else float("-inf")


def _pixels(values: dict[str, Any]) -> float:
    width, height = _number(values.get("width")), _number(values.get("height"))
    if width == float("-inf") or height == float("-inf"):
        return 0
    batch = _number(values.get("batch_size"))
    return width * height * (batch if batch != float("-inf") else 1)
