"""graphflow: a node-graph workflow engine. This package is domain-agnostic and imports no torch."""
from .builder import Graph
from .context import CancelToken, RunContext, Settings
from .errors import Cancelled, Issue, NodeFailed, NodeInputError, WorkflowFormatError, WorkflowInvalid
from .execute import Engine, RunReport
from .node import Input, node
from .outputs import OutputFile
from .registry import Registry, discover

__all__ = ["Graph", "CancelToken", "RunContext", "Settings", "Cancelled", "Issue", "NodeFailed", "NodeInputError",
           "WorkflowFormatError", "WorkflowInvalid", "Engine", "RunReport", "Input", "node", "OutputFile",
           "Registry", "discover"]
