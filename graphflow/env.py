"""Every ``GRAPHFLOW_*`` environment variable, read in one place.

A bad value raises :class:`EnvironmentInvalid` with one line naming the variable, what it accepts and what
it holds, so the CLI (exit 2) and the server (refuses to start) can say so without a traceback.
``check_environment()`` reads them all up front and returns every such line at once."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable

from .errors import GraphflowError


class EnvironmentInvalid(GraphflowError):
    """An environment variable holds a value graphflow cannot use."""

    def __init__(self, name: str, expected: str, received: str, note: str = ""):
        self.name, self.expected, self.received = name, expected, received
        super().__init__(f"environment variable {name}: expected {expected}, received {received!r}"
                         + (f" ({note})" if note else ""))


_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4,
          "ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]i?)?b?\s*", re.IGNORECASE)
_FLAGS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
_MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def _raw(name: str) -> str | None:
    """The variable's text, or None when it is unset or empty (empty means "use the default" everywhere)."""
    value = os.environ.get(name)
    return value if value is not None and value.strip() else None


def env_bytes(name: str, default: int) -> int:
    """A size in bytes: ``2147483648``, ``512MiB``, ``2GiB``, ``1.5G`` (K/M/G/T are powers of 1000, Ki/Mi/... of 1024)."""
    raw = _raw(name)
    if raw is None:
        return default
    match = _SIZE.fullmatch(raw)
    if not match:
        raise EnvironmentInvalid(name, "a size in bytes such as 2147483648, 512MiB or 2GiB", raw)
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])


def env_int(name: str, default: int, minimum: int = 0) -> int:
    """A whole number, at least ``minimum``."""
    raw = _raw(name)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise EnvironmentInvalid(name, f"a whole number >= {minimum}", raw)
    return value


def env_flag(name: str, default: bool = False) -> bool:
    raw = _raw(name)
    if raw is None:
        return default
    value = _FLAGS.get(raw.strip().lower())
    if value is None:
        raise EnvironmentInvalid(name, "1, 0, true, false, yes, no, on or off", raw)
    return value


def env_dir(name: str, default: Path | None = None) -> Path | None:
    """A folder (it need not exist yet, but must not be a file)."""
    raw = _raw(name)
    if raw is None:
        return default
    path = Path(raw).expanduser()
    if path.exists() and not path.is_dir():
        raise EnvironmentInvalid(name, "a folder", raw, "that is a file")
    return path


def env_modules(name: str, default: list[str] | None = None) -> list[str] | None:
    """A comma-separated list of importable module names (``pack_a,pack.b``)."""
    raw = _raw(name)
    if raw is None:
        return default
    modules = [m.strip() for m in raw.split(",") if m.strip()]
    if not modules or not all(_MODULE.fullmatch(m) for m in modules):
        raise EnvironmentInvalid(name, "comma-separated Python module names such as nodes,mypack.nodes", raw)
    return modules


def env_token(name: str, default: str | None = None) -> str | None:
    raw = _raw(name)
    if raw is None:
        return default
    if any(c.isspace() or not c.isprintable() for c in raw):
        raise EnvironmentInvalid(name, "a token without spaces, newlines or control characters", raw)
    return raw


# Every variable graphflow reads and the reader that checks it. Code reads them through ``read`` so that
# ``check_environment`` knows them all.
VARIABLES: dict[str, Callable[..., Any]] = {
    "GRAPHFLOW_MODELS_DIR": env_dir,
    "GRAPHFLOW_INPUT_DIR": env_dir,
    "GRAPHFLOW_OUTPUT_DIR": env_dir,
    "GRAPHFLOW_CACHE_DIR": env_dir,
    "GRAPHFLOW_CACHE_BYTES": env_bytes,
    "GRAPHFLOW_DISK_CACHE": env_dir,
    "GRAPHFLOW_DISK_CACHE_BYTES": env_bytes,
    "GRAPHFLOW_MAX_MODELS": env_int,
    "GRAPHFLOW_CHECK_MUTATIONS": env_flag,
    "GRAPHFLOW_NODES": env_modules,
    "GRAPHFLOW_TOKEN": env_token,
}


def read(name: str, default: Any = None) -> Any:
    """The parsed value of variable ``name`` (one of :data:`VARIABLES`), or ``default`` when unset or empty."""
    return VARIABLES[name](name, default)


def check_environment() -> list[str]:
    """One line per variable that holds a bad value (empty when all are usable)."""
    problems = []
    for name, reader in VARIABLES.items():
        try:
            reader(name, None)
        except EnvironmentInvalid as exc:
            problems.append(str(exc))
    return problems
