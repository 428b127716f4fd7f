"""Seed inputs: a node marks a literal as a seed, and the engine draws the random ones when a run starts.

    @node(outputs={"latent": "LATENT"})
    def AddNoise(latent=Input("LATENT"), seed: Seed = 0): ...

A seed input takes an integer, or one of its *random values* (``-1`` and ``"random"`` for :data:`Seed`), which
mean "draw a seed for this run". :func:`draw_seeds` puts the drawn seed into the checked workflow before the
plan is made, so the cache key, the run report, the events and whatever reads the workflow (image metadata)
all see the seed that was used, and a resubmitted workflow with ``-1`` draws a new one instead of hitting the
cache. Seeds are drawn below 2**32, as A1111 does, so they stay short to type and paste anywhere.
"""
from __future__ import annotations

import secrets
from dataclasses import replace
from typing import Annotated, Any, Callable, Literal, Union

from pydantic import Field, ValidationError, WrapValidator
from pydantic_core import PydanticCustomError

from .node import NodeSpec, literal_default
from .registry import Registry
from .validate import CheckedWorkflow
from .workflow import Workflow

RANDOM = "random"
MAX_SEED = 2**64 - 1
DRAWN_BELOW = 2**32
MARKER = "seed"  # marks a literal's JSON Schema as a seed's: {"seed": {"random": [-1, "random"], "maximum": ...}}


def seed_type(minimum: int = 0, maximum: int = MAX_SEED, random: tuple[int | str, ...] = (-1, RANDOM)) -> Any:
    """The annotation of a seed literal: an integer from ``minimum`` to ``maximum``, or one of ``random``."""
    number = Annotated[int, Field(ge=minimum, le=maximum)]
    expected = f"an integer from {minimum} to {maximum}, or {' or '.join(repr(v) for v in random)} for a random seed"

    def one_error(value: Any, handler: Callable[[Any], Any]) -> Any:
        try:
            return handler(value)
        except ValidationError:  # one message for the input instead of one per member of the union
            raise PydanticCustomError("seed", "Input should be {expected}", {"expected": expected}) from None

    return Annotated[Union[number, Literal[tuple(random)]], WrapValidator(one_error),
                     Field(json_schema_extra={MARKER: {"random": list(random), "maximum": maximum}})]


Seed = seed_type()


def seed_inputs(spec: NodeSpec) -> dict[str, dict[str, Any]]:
    """A node type's seed literals, each with its marker (``random``: the values that mean random; ``maximum``)."""
    found = {}
    for name, info in spec.literals.model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, dict) and isinstance(extra.get(MARKER), dict):
            found[name] = extra[MARKER]
    return found


def _is_random(value: Any, marker: dict[str, Any]) -> bool:
    return any(value == v and type(value) is type(v) for v in marker["random"])  # type: True == 1, but is no seed


def draw_seeds(checked: CheckedWorkflow, draw: Callable[[int], int] = secrets.randbelow) -> tuple[CheckedWorkflow, dict[str, dict[str, Any]]]:
    """The checked workflow with every random seed replaced by a drawn one, and the seeds it uses by node."""
    overrides: dict[tuple[str, str], int] = {}
    used: dict[str, dict[str, Any]] = {}
    nodes = dict(checked.nodes)
    for node_id, node in checked.nodes.items():
        seeds = seed_inputs(node.spec)
        if not seeds:
            continue
        literals = dict(node.literals)
        for name, marker in seeds.items():
            if _is_random(literals[name], marker):
                literals[name] = overrides[node_id, name] = draw(DRAWN_BELOW)
        # a negative value that is not random (Sample's -1: "continue the stream") seeds nothing of its own
        if values := {name: literals[name] for name in seeds if literals[name] >= 0}:
            used[node_id] = values
        nodes[node_id] = replace(node, literals=literals)
    if not overrides:
        return checked, used
    return replace(checked, workflow=checked.workflow.with_values(overrides), nodes=nodes), used


def offset_seeds(workflow: Workflow, registry: Registry, offset: int) -> Workflow:
    """The workflow with ``offset`` added to every fixed seed (an integer >= 0; defaults count), as A1111's
    "Batch count" does from one image to the next. Random seeds stay random: each run draws its own."""
    if offset == 0:
        return workflow
    overrides = {}
    for node_id, entry in workflow.nodes.items():
        spec = registry.get(entry.type)
        if spec is None:
            continue
        for name, marker in seed_inputs(spec).items():
            value = entry.inputs.get(name, literal_default(spec.literals.model_fields[name]))
            if type(value) is int and value >= 0 and not _is_random(value, marker):
                overrides[node_id, name] = (value + offset) % (marker["maximum"] + 1)
    return workflow.with_values(overrides)
