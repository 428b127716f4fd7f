"""What one request may ask of the server, checked before a job is queued.

The checks know no node type: literal inputs are bounded by *name* (``max_literal``: the node packs declare
defaults in their :class:`~graphflow.registry.NodePack`, ``--max-literal`` overrides them), and a node that
declares a pixel count (``@node(pixels=(...))``: the literals whose product it is) is bounded by ``max_pixels``.
What a workflow makes from those literals (an image scaled up three times, a prompt of thousands of windows) is
bounded at run time: the server puts :meth:`Limits.run_limits` in the engine's settings, and nodes check them with
``ctx.check_limit`` before they allocate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from ..errors import IssueCode
from ..validate import CheckedWorkflow


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 1024 * 1024  # a JSON request body; bigger → 413
    max_upload_bytes: int = 16 * 1024 * 1024  # one uploaded image file; bigger → 413
    max_upload_pixels: int = 4096 * 4096
    max_nodes: int = 500
    max_queued: int = 1000  # jobs waiting; more → 429
    max_repeat: int = 100  # jobs one POST /jobs may ask for with "repeat"
    max_pixels: int = 2048 * 2048 * 4  # the pixel count of any node that declares one
    max_literal: dict[str, float] = field(default_factory=dict)  # by literal name, over the node packs' defaults
    max_run: dict[str, float] = field(default_factory=dict)  # run-time bounds by name, over the node packs' defaults

    def run_limits(self, defaults: Mapping[str, float]) -> dict[str, float]:
        """The bounds nodes check while they run (``Settings.limits``): ``max_pixels`` as "pixels", over the
        packs' ``run_limits`` ``defaults``, under what ``max_run`` sets."""
        return {"pixels": self.max_pixels, **defaults, **self.max_run}

    def over_defaults(self, defaults: Mapping[str, float]) -> "Limits":
        """These limits with ``defaults`` (a registry's ``literal_limits``) under the literal bounds set here."""
        return replace(self, max_literal={**defaults, **self.max_literal})


def issue(input_name: str | None, message: str, expected: Any, received: Any, *, code: IssueCode) -> dict[str, Any]:
    """One entry of a ``node_errors`` list (the same shape validation errors have)."""
    return {"input": input_name, "message": message, "expected": expected, "received": received, "code": code}


def check_size(node_count: int, limits: Limits) -> dict[str, list[dict[str, Any]]]:
    if node_count > limits.max_nodes:
        return {"": [issue(None, "too many nodes", f"at most {limits.max_nodes} nodes", node_count, code="over_limit")]}
    return {}


def check_literals(checked: CheckedWorkflow, limits: Limits) -> dict[str, list[dict[str, Any]]]:
    """Over-limit literal inputs by node id. Uses the checked literals, so defaults count too."""
    problems: dict[str, list[dict[str, Any]]] = {}
    for node_id, node in checked.nodes.items():
        values = node.literals
        found = [issue(name, f"{name} is above this server's limit", f"at most {limit}", values[name], code="over_limit")
                 for name, limit in limits.max_literal.items() if _number(values.get(name)) > limit]
        factors = node.spec.pixels  # validated literals, so numbers
        pixels = math.prod(values[name] for name in factors) if factors else 0
        if pixels > limits.max_pixels:
            found.append(issue(factors[0], f"image too large for this server ({' × '.join(factors)})",
                               f"at most {limits.max_pixels} pixels", pixels, code="over_limit"))
        if found:
            problems[node_id] = found
    return problems


def _number(value: Any) -> float:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else float("-inf")
