"""How a node type declares itself: one decorated function.

    @node(outputs={"value": "NUMBER"}, category="math")
    def Add(a: float = Input("NUMBER"),
            b: float = Input("NUMBER", optional=True),
            bias: int = Field(0, ge=0, le=10, multiple_of=2)):
        \"\"\"a + b + bias.\"\"\"
        return a + (b or 0) + bias

The function's parameters are its inputs:
- a parameter whose default is ``Input("TYPE")`` is a *socket* input, fed by a link;
- every other parameter is a *literal* input ("widget"); its annotation and pydantic ``Field`` give type,
  default, bounds, enum (``typing.Literal``) and description, and one pydantic model validates them all;
- a keyword-only parameter ``*, ctx: RunContext`` (no default) receives the
  :class:`~graphflow.context.RunContext` (progress, cancel, settings, warnings). The engine always passes
  it, so a node never checks for None or falls back to settings of its own; tests call nodes through a
  helper that builds a real context the same way.

A node that reads named files declares ``preflight(literals, settings)``: it returns a :class:`FileProblem` for
each file input that names nothing usable, and validation reports them before anything runs.

It returns one value per declared output (a tuple when there are several). An *output node*
(``output=True``) declares no outputs and returns a JSON-able dict that lands in the run report.

Errors. A bad input is a :class:`~graphflow.errors.NodeInputError` naming the node's input. Code that knows
which input it reads (the node function, a resolver handed the input's name) raises it directly; pure
helpers, which know nothing of nodes, raise :class:`~graphflow.errors.InvalidArgument` naming their own
parameter, and the node translates (``with node_inputs(helper_arg="input"): ...``, or an ``except``
that adds context). Any other exception is a bug and is reported as such.

Fingerprints. ``fingerprint(literals, settings)`` is called on every plan, before any node runs, with the
engine's settings. It returns a cheap identity of the outside state the node will read: paths with sizes and
modification times, never file contents. When an input names nothing usable it raises the NodeInputError
the node itself would raise, so the run stops before anything executes; it never returns a placeholder.

Neutral inputs. ``neutral`` names literal inputs that change how a node computes but not what its outputs lead
to (a loader's attention kernel or CPU offload: the same weights, results equal up to float rounding). The
node's own cache key includes them, so a loader keeps one object per choice; the key that nodes linked to its
outputs see leaves them out, so everything downstream is computed once whatever the choice.
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
    pixels: tuple[str, ...] = ()  # literal inputs whose product is the number of pixels the node makes
    preflight: Preflight | None = None
    neutral: tuple[str, ...] = ()  # literal inputs left out of the key downstream nodes see (module docstring)

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
    pixels: tuple[str, ...] = (),
    preflight: Preflight | None = None,
    neutral: tuple[str, ...] = (),
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a node type. ``fingerprint(literals, settings)`` returns a string that changes when the
    outside world the node reads changes (see the module docstring); ``cache="never"`` reruns the node every time;
    ``pool="model"`` keeps results in the model pool (shared weights) instead of the byte-budgeted LRU;
    ``pixels`` names the literal inputs whose product is how many pixels the node makes (a shared server
    bounds it, whatever the inputs are called); ``preflight(literals, settings)`` returns the
    :class:`FileProblem` of each named file that cannot be found; ``neutral`` names literal inputs that do not
    change what the outputs lead to (see the module docstring)."""

    def declare(function: Callable[..., Any]) -> Callable[..., Any]:
        spec = build_spec(function, name or function.__name__, outputs or {}, category, version, output, cache,
                          fingerprint, pool, tuple(pixels))
        if preflight is not None:
            spec = replace(spec, preflight=preflight)
        if neutral:
            unknown = [n for n in neutral if n not in spec.literal_names]
            if unknown:
                raise TypeError(f"node {spec.name}: neutral= names {unknown}, which are not literal inputs")
            spec = replace(spec, neutral=tuple(neutral))
        setattr(function, NODE_ATTRIBUTE, spec)
        return function

    return declare


def build_spec(function, name, outputs, category, version, output, cache, fingerprint, pool, pixels=()) -> NodeSpec:
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
            if param.kind is not param.KEYWORD_ONLY or param.default is not inspect.Parameter.empty:
                raise TypeError(f"node {name}: take the run context as a keyword-only parameter without a "
                                f"default (`*, ctx: RunContext`): the engine always passes it")
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
    unknown = [p for p in pixels if p not in literal_fields]
    if unknown:
        raise TypeError(f"node {name}: pixels= names {unknown}, which are not literal inputs")
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
        pixels=tuple(pixels),
    )


def spec_of(obj: Any) -> NodeSpec | None:
    return getattr(obj, NODE_ATTRIBUTE, None)


def literal_default(field_info: FieldInfo) -> Any:
    """The default of a literal input, or ``...`` when it is required."""
    return ... if field_info.is_required() else field_info.get_default(call_default_factory=True)
