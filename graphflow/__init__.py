"""graphflow: a node-graph workflow engine. This package is domain-agnostic and imports no torch.

The names below are imported on first use, so ``import graphflow.cli`` costs only what the command needs
(and the CLI's entry point is in place to catch Ctrl-C before any heavy import starts)."""
from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Graph": "builder", "CancelToken": "context", "RunContext": "context", "Settings": "context",
    "Cancelled": "errors", "Issue": "errors", "NodeFailed": "errors", "NodeInputError": "errors",
    "WorkflowFormatError": "errors", "WorkflowInvalid": "errors", "Engine": "execute", "RunReport": "execute",
    "Input": "node", "node": "node", "OutputFile": "outputs", "NodePack": "registry", "Registry": "registry",
    "discover": "registry",
}
__all__ = list(_EXPORTS)

if TYPE_CHECKING:
    from .builder import Graph
    from .context import CancelToken, RunContext, Settings
    from .errors import Cancelled, Issue, NodeFailed, NodeInputError, WorkflowFormatError, WorkflowInvalid
    from .execute import Engine, RunReport
    from .node import Input, node
    from .outputs import OutputFile
    from .registry import NodePack, Registry, discover


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'graphflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        # Importing the submodule graphflow.node sets the package attribute "node" to it; the decorator of the
        # same name must stay what ``graphflow.node`` means (as it did when this file imported it eagerly).
        if name == "node" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
