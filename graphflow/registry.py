"""Finds node types and publishes the catalog.

Node types come from modules: every function decorated with ``@node`` in a scanned module is
registered. The built-in ``nodes`` package is scanned, and so is every package that declares an
entry point in the ``graphflow.nodes`` group (its value names a module or package), so third-party
node packs plug in without editing graphflow. A scanned module may also declare what its pack knows
beyond single nodes, as ``GRAPHFLOW_PACK = NodePack(...)``: the engine itself knows no node's domain.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Optional

from . import env
from .node import NodeSpec, literal_default, spec_of

if TYPE_CHECKING:
    from .workflow import Workflow

ENTRY_POINT_GROUP = "graphflow.nodes"
PACK_ATTRIBUTE = "GRAPHFLOW_PACK"
# Reads a decoded JSON document of the pack's own format: (document, source label, registry) → the Workflow,
# or None when the document is not in that format; a document in the format but malformed raises
# WorkflowFormatError naming ``source``.
DocumentReader = Callable[[Any, str, "Registry"], Optional["Workflow"]]


@dataclass(frozen=True)
class NodePack:
    """What a node pack declares besides its nodes.

    ``literal_limits``: default upper bounds, by literal input name, that a shared server applies to every
    node type (its ``--max-literal`` overrides them; when two packs bound one name the lower bound wins).
    ``run_limits``: default upper bounds, by name, on what the pack's nodes make at run time (they check them
    with ``ctx.check_limit``); a shared server applies them (its ``--max-run`` overrides them; lower bound wins).
    ``output_example``: an output node type that messages name when a workflow has no output node.
    ``document_readers``: readers of other workflow formats (see :data:`DocumentReader`); every entry point reads
    documents through :func:`graphflow.documents.read_document`, which tries them after graphflow's own format.
    ``png_text_chunks``: names of PNG text chunks that may carry such a document, looked in after graphflow's own.
    ``server_extensions``: factories the HTTP server calls with itself (a :class:`graphflow.server.app.Server`) when
    it starts; each returns an object whose ``routes()`` gives aiohttp route definitions added after the server's
    own (see ``graphflow/server/app.py`` for what else it may answer). The engine imports none of them."""

    literal_limits: Mapping[str, float] = field(default_factory=dict)
    output_example: str | None = None
    run_limits: Mapping[str, float] = field(default_factory=dict)
    document_readers: tuple[DocumentReader, ...] = ()
    png_text_chunks: tuple[str, ...] = ()
    server_extensions: tuple[Callable[[Any], Any], ...] = ()


class Registry:
    def __init__(self, specs: Iterable[NodeSpec] = ()):
        self._specs: dict[str, NodeSpec] = {}
        self.literal_limits: dict[str, float] = {}
        self.run_limits: dict[str, float] = {}
        self.output_example: str | None = None
        self.document_readers: list[DocumentReader] = []
        self.png_text_chunks: list[str] = []
        self.server_extensions: list[Callable[[Any], Any]] = []
        for spec in specs:
            self.add(spec)

    def add(self, spec: NodeSpec) -> None:
        known = self._specs.get(spec.name)
        if known is not None and known.function is not spec.function:
            raise ValueError(f"two node types are named {spec.name!r}: {_origin(known)} and {_origin(spec)}")
        self._specs[spec.name] = spec

    def add_pack(self, pack: NodePack) -> None:
        for name, limit in pack.literal_limits.items():
            self.literal_limits[name] = min(limit, self.literal_limits.get(name, limit))
        for name, limit in pack.run_limits.items():
            self.run_limits[name] = min(limit, self.run_limits.get(name, limit))
        self.output_example = self.output_example or pack.output_example
        self.document_readers += [r for r in pack.document_readers if r not in self.document_readers]
        self.png_text_chunks += [c for c in pack.png_text_chunks if c not in self.png_text_chunks]
        self.server_extensions += [make for make in pack.server_extensions if make not in self.server_extensions]

    def add_module(self, module: ModuleType) -> None:
        """Register every node in a module, and in its submodules when it is a package, and the module's
        :class:`NodePack` declaration if it has one."""
        pack = getattr(module, PACK_ATTRIBUTE, None)
        if isinstance(pack, NodePack):
            self.add_pack(pack)
        for value in vars(module).values():
            spec = spec_of(value)
            if spec is not None:
                self.add(spec)
        if hasattr(module, "__path__"):
            for info in pkgutil.iter_modules(module.__path__, module.__name__ + "."):
                self.add_module(importlib.import_module(info.name))

    def get(self, name: str) -> NodeSpec | None:
        return self._specs.get(name)

    def __contains__(self, name: str) -> bool:
        return name in self._specs

    def names(self) -> list[str]:
        return sorted(self._specs)

    def modules(self) -> list[str]:
        """The modules defining its node types: importing them into a fresh Registry rebuilds it elsewhere
        (a Ray worker process)."""
        return sorted({spec.function.__module__ for spec in self._specs.values()})

    def catalog(self) -> dict[str, Any]:
        """Every node type with its inputs, outputs, defaults, bounds and a JSON Schema of its literal inputs."""
        return {name: catalog_entry(self._specs[name]) for name in self.names()}


def _origin(spec: NodeSpec) -> str:
    return f"{spec.function.__module__}.{spec.function.__qualname__}"


def catalog_entry(spec: NodeSpec) -> dict[str, Any]:
    """One node type as the catalog (``graphflow nodes --json``, ``GET /nodes``) shows it."""
    schema = spec.literals.model_json_schema()
    inputs: dict[str, Any] = {}
    for name in spec.input_order:
        if name in spec.sockets:
            socket = spec.sockets[name]
            inputs[name] = {"kind": "socket", "type": socket.type, "required": not socket.optional, "description": socket.description}
        else:
            field = spec.literals.model_fields[name]
            default = literal_default(field)
            entry = {"kind": "literal", "required": default is ..., "schema": schema.get("properties", {}).get(name, {})}
            if default is not ...:
                entry["default"] = default
            inputs[name] = entry
    return {
        "category": spec.category,
        "description": spec.description,
        "version": spec.version,
        "output_node": spec.output_node,
        "cache": spec.cache,
        "inputs": inputs,
        "outputs": dict(spec.outputs),
        "schema": schema,
    }


def discover(include_entry_points: bool = True, builtin: str | None = "nodes") -> Registry:
    """The registry of the built-in node library plus every installed node pack.

    ``GRAPHFLOW_NODES=pack_a,pack_b`` replaces that list with exactly these modules (tests, sandboxes)."""
    registry = Registry()
    for module_name in pack_modules(include_entry_points, builtin):
        registry.add_module(import_pack(module_name))
    return registry


def pack_modules(include_entry_points: bool = True, builtin: str | None = "nodes") -> list[str]:
    """The node packs' module names, in discovery order (``GRAPHFLOW_NODES`` replaces the list)."""
    chosen = env.read("GRAPHFLOW_NODES")
    if chosen:
        return chosen
    modules = [builtin] if builtin else []
    if include_entry_points:
        modules += [ep.value for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.value not in modules]
    return modules


def import_pack(module_name: str) -> ModuleType:
    """Import a node pack's module. One that ``GRAPHFLOW_NODES`` names but that does not exist is a bad value of
    that variable (:class:`EnvironmentInvalid`), not a traceback."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        chosen = env.read("GRAPHFLOW_NODES") or []
        named_module_missing = exc.name is not None and f"{module_name}.".startswith(f"{exc.name}.")
        if module_name not in chosen or not named_module_missing:
            raise  # a node pack that exists but imports something missing: its own error
        raise env.EnvironmentInvalid("GRAPHFLOW_NODES", "names of importable modules", ",".join(chosen),
                                     f"there is no module named {exc.name!r}") from None


_default: Registry | None = None


def default_registry() -> Registry:
    """Discovered once per process and shared (discovery imports the node modules)."""
    global _default
    if _default is None:
        _default = discover()
    return _default
