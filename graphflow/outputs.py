"""What output nodes return: the files they wrote, typed, so the CLI and the server need no node-specific keys.

An output node returns a list of :class:`OutputFile` (or, for results that are no files, a JSON-ready dict).
Run reports show the files grouped by kind, ``{"images": [{"filename": ..., "width": ..., ...}], ...}``: the
group is the kind's plural, each entry the file's name (relative to the output folder) and its ``info``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class OutputFile:
    """A file an output node wrote. ``kind`` names what it is in the node pack's words ("image", ...);
    ``filename`` is relative to the output folder with "/" separators, never absolute; ``info`` is JSON-ready."""

    kind: str
    filename: str
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.kind or not self.kind.isidentifier():
            raise ValueError(f"an output file's kind is a word, got {self.kind!r}")
        if self.filename.startswith(("/", "\\")) or ":" in self.filename or ".." in self.filename.split("/"):
            raise ValueError(f"an output file's name is relative to the output folder, got {self.filename!r}")

    @property
    def group(self) -> str:
        """The report key listing files of this kind: the kind's plural."""
        return self.kind + "s"

    def to_json(self) -> dict[str, Any]:
        return {"filename": self.filename, **self.info}


def files_of(result: Any) -> list[OutputFile]:
    """The files in an output node's result (none for a plain dict result)."""
    if isinstance(result, (list, tuple)):
        return [item for item in result if isinstance(item, OutputFile)]
    return []


def report_form(result: Any) -> dict[str, Any]:
    """An output node's result as the run report shows it: its files grouped by kind, or its dict as is."""
    if isinstance(result, dict):
        return result
    if not isinstance(result, (list, tuple)) or not all(isinstance(item, OutputFile) for item in result):
        raise TypeError(f"an output node returns a list of OutputFile or a dict, got {type(result).__name__}")
    grouped: dict[str, list[dict[str, Any]]] = {}
    for item in result:
        grouped.setdefault(item.group, []).append(item.to_json())
    return grouped
