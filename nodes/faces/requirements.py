"""The optional packages face restoration needs, and the error that names how to install them."""
from __future__ import annotations

import importlib.util

from graphflow.errors import NodeInputError

# module → the graphflow extra that installs it
EXTRAS = {"facexlib": "faces", "spandrel_extra_arches": "codeformer"}


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def require_package(module: str, purpose: str, input_name: str = "name", received: object = None) -> None:
    """A NodeInputError on ``input_name`` naming the package and the extra when ``module`` is not installed."""
    if not installed(module):
        extra = EXTRAS[module]
        raise NodeInputError(input_name, f"{purpose} needs the {module} package, which is not installed",
                             f"pip install 'graphflow[{extra}]' (or pip install {module})",
                             module if received is None else received)
