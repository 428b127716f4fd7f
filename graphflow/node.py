"""How a node type declares itself: one decorated function.

    @node(outputs={"latent": "LATENT"}, category="latent")
    def EmptyLatent(width: int = Field(512, ge=64, multiple_of=8),
                    height: int = Field(512, ge=64, multiple_of=8),
                    batch_size: int = Field(1, ge=1, le=64)):
        \"\"\"An all-zero latent batch.\"\"\"
        return Latent(...)

The function's parameters are its inputs:
- a parameter whose default is ``Input("TYPE")`` is a *socket* input, fed by a link;
- every other parameter is a *literal* input ("widget"); its annotation and pydantic ``Field`` give type,
  default, bounds, enum (``typing.Literal``) and description, and one pydantic model validates them all;
- a parameter named ``ctx`` receives the :class:`~graphflow.context.RunContext` (progress, cancel, settings).

A node that reads named files declares ``preflight(literals, settings)``: it returns a :class:`FileProblem` for
each file input that names nothing usable, and validation reports them before anything runs.

It returns one value per declared output (a tuple when there are several). An *output node*
(``output=True``) declares no outputs and returns a JSON-able dict that lands in the run report.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Literal

from pydantic import BaseModel, ConfigDict, create_model
from pydantic.fields import FieldInfo

from .outputs import OutputFile
from .types import check_type_name

CachePolicy = Literal["content", "never"]
Pool = Literal["value", "model"]
NODE_ATTRIBUTE = "__graphflow_node__"


@dataclass(frozen=True)
class Input:
    """Marks a parameter as a socket input of the given type."""

    type: str
    optional: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        check_type_name(self.type)


@dataclass(frozen=True)
class FileProblem:
    """A file input that names nothing usable, found by a node's ``preflight`` before the workflow runs.

    ``available`` lists the names that would resolve when the file is missing (validation shows the nearest
    first); it is None for other problems (a name leaving its folder), which say what they ``expected``."""

    input: str
    message: str
    received: Any
    available: tuple[str, ...] | None = None
    expected: Any = None


Preflight = Callable[[dict[str, Any], Any], Iterable[FileProblem]]


@dataclass(frozen=True)
class NodeSpec:
    """Everything the engine knows about a node type."""

    name: str
    function: Callable[..., Any]
    category: str
    description: str
    version: int
    sockets: dict[str, Input]
    literals: type[BaseModel]
    outputs: dict[str, str]
    output_node: bool
    cache: CachePolicy
    fingerprint: Callable[[dict[str, Any], Any], str] | None
    pool: Pool
    wants_context: bool
    input_order: tuple[str, ...] = field(default=())
    preflight: Preflight | None = None

    @property
    def literal_names(self) -> tuple[str, ...]:
        return tuple(self.literals.model_fields)

    def output_type(self, output: str) -> str | None:
        return self.outputs.get(output)

    def call(self, sockets: dict[str, Any], literals: dict[str, Any], ctx: Any) -> tuple[Any, ...] | dict[str, Any]:
        """Run the function and normalise its result to a tuple of outputs (an output node's: its files, or a dict)."""
        kwargs = {**literals, **dict.fromkeys(self.sockets), **sockets}  # unlinked optional sockets arrive as None
        if self.wants_context:
            kwargs["ctx"] = ctx
        result = self.function(**kwargs)
        if self.output_node:
            if not isinstance(result, dict) and not (isinstance(result, (list, tuple))
                                                     and all(isinstance(item, OutputFile) for item in result)):
                raise TypeError(f"output node {self.name} must return a list of OutputFile (or a dict), "
                                f"returned {type(result).__name__}")
            return result
        if len(self.outputs) == 1:
            return (result,)
        if not isinstance(result, tuple) or len(result) != len(self.outputs):
            raise TypeError(f"{self.name} must return a tuple of {len(self.outputs)} outputs {list(self.outputs)}")
        return result


def node(
    name: str | None = None,
    *,
    outputs: dict[str, str] | None = None,
    category: str = "misc",
    version: int = 1,
    output: bool = False,
    cache: CachePolicy = "content",
    fingerprint: Callable[[dict[str, Any], Any], str] | None = None,
    pool: Pool = "value",
    preflight: Preflight | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a node type. ``fingerprint(literals, settings)`` returns a string that changes when the
    outside world the node reads changes (a file's content); ``cache="never"`` reruns the node every time;
    ``pool="model"`` keeps results in the model pool (shared weights) instead of the byte-budgeted LRU;
    ``preflight(literals, settings)`` returns the :class:`FileProblem` of each named file that cannot be found."""

    def declare(function: Callable[..., Any]) -> Callable[..., Any]:
        spec = build_spec(function, name or function.__name__, outputs or {}, category, version, output, cache, fingerprint, pool)
        if preflight is not None:
            spec = replace(spec, preflight=preflight)
        setattr(function, NODE_ATTRIBUTE, spec)
        return function

    return declare


def build_spec(function, name, outputs, category, version, output, cache, fingerprint, pool) -> NodeSpec:
    if output and outputs:
        raise TypeError(f"node {name}: an output node reports a UI dict and declares no socket outputs")
    if not output and not outputs:
        raise TypeError(f"node {name}: declare its outputs, or mark it output=True")
    for type_name in outputs.values():
        check_type_name(type_name)
    sockets: dict[str, Input] = {}
    literal_fields: dict[str, tuple[Any, Any]] = {}
    wants_context = False
    order = []
    for param in inspect.signature(function, eval_str=True).parameters.values():
        if param.name == "ctx":
            wants_context = True
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"node {name}: *args/**kwargs cannot be node inputs")
        order.append(param.name)
        if isinstance(param.default, Input):
            sockets[param.name] = param.default
            continue
        annotation = Any if param.annotation is inspect.Parameter.empty else param.annotation
        default = ... if param.default is inspect.Parameter.empty else param.default
        literal_fields[param.name] = (annotation, default)
    literals = create_model(
        f"{name}Inputs",
        __config__=ConfigDict(extra="forbid", strict=True, frozen=True, title=name),
        **literal_fields,
    )
    return NodeSpec(
        name=name,
        function=function,
        category=category,
        description=inspect.cleandoc(function.__doc__ or "").split("\n\n")[0],
        version=version,
        sockets=sockets,
        literals=literals,
        outputs=dict(outputs),
        output_node=output,
        cache=cache,
        fingerprint=fingerprint,
        pool=pool,
        wants_context=wants_context,
        input_order=tuple(order),
    )


def spec_of(obj: Any) -> NodeSpec | None:
    return getattr(obj, NODE_ATTRIBUTE, None)


def literal_default(field_info: FieldInfo) -> Any:
    """The default of a literal input, or ``...`` when it is required."""
    return ... if field_info.is_required() else field_info.get_default(call_default_factory=True)
