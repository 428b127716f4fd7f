"""Small pure-Python node types for engine tests (no torch). ``CALLS`` counts executions per node type."""
from __future__ import annotations

import hashlib
import time
from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import Field

from graphflow.errors import NodeInputError
from graphflow.node import FileProblem, Input, node
from graphflow.registry import NodePack
from graphflow.seeds import Seed, seed_type

CALLS: Counter = Counter()


@node(outputs={"value": "NUMBER"}, category="test")
def Number(value: float = Field(0.0, ge=-1000, le=1000, description="a constant")):
    """A constant number."""
    CALLS["Number"] += 1
    return value


@node(outputs={"value": "NUMBER"}, category="test")
def Add(a=Input("NUMBER"), b=Input("NUMBER", optional=True), bias: int = Field(0, ge=0, le=10, multiple_of=2)):
    """a + b + bias."""
    CALLS["Add"] += 1
    return a + (b or 0) + bias


@node(outputs={"value": "NUMBER", "text": "TEXT"}, category="test")
def Describe(value=Input("NUMBER"), mode: Literal["plain", "fancy"] = "plain"):
    """Two outputs: the number and a text about it."""
    CALLS["Describe"] += 1
    return value, (f"~{value}~" if mode == "fancy" else str(value))


@node(outputs={"value": "NUMBER"}, category="test", neutral=("method",))
def Halve(value=Input("NUMBER"), method: Literal["multiply", "divide"] = "multiply"):
    """value / 2, computed one of two ways that give the same number (a neutral input)."""
    CALLS["Halve"] += 1
    return value * 0.5 if method == "multiply" else value / 2


@node(outputs={"items": "LIST"}, category="test")
def MakeList(value=Input("NUMBER"), length: int = Field(3, ge=1, le=10_000_000)):
    """A list holding ``value`` ``length`` times (big lists test the cache budget)."""
    CALLS["MakeList"] += 1
    return [value] * length


@node(outputs={"items": "LIST"}, category="test")
def AppendInPlace(items=Input("LIST")):
    """Badly behaved on purpose: mutates its input."""
    items.append(0)
    return items


@node(outputs={"value": "NUMBER"}, category="test", fingerprint=lambda literals, settings: hashlib.sha256(
    (Path(settings.input_dir) / literals["name"]).read_bytes()).hexdigest())
def ReadNumber(name: str, *, ctx):
    """Reads a number from a file in the input directory; the file's content is its fingerprint."""
    CALLS["ReadNumber"] += 1
    return float((Path(ctx.settings.input_dir) / name).read_text())


def _number_file(name: str, settings) -> Path | None:
    folders = [Path(settings.input_dir), *settings.asset_dirs]
    return next((folder / name for folder in folders if (folder / name).is_file()), None)


def _number_file_preflight(literals, settings):
    name = literals["name"]
    if ".." in name:
        return [FileProblem("name", "must not climb out of its folder", name, expected="a name inside the input folder")]
    if _number_file(name, settings):
        return []
    return [FileProblem("name", f"no file {name!r}", name, tuple(sorted(p.name for p in Path(settings.input_dir).glob("*.txt"))))]


@node(outputs={"value": "NUMBER"}, category="test", preflight=_number_file_preflight)
def LoadNumber(name: str, *, ctx):
    """Reads a number from a file in the input directory or an asset folder, whose existence validation checks first."""
    CALLS["LoadNumber"] += 1
    return float(_number_file(name, ctx.settings).read_text())


@node(outputs={"value": "NUMBER"}, category="test")
def Seeded(seed: Seed = 0, offset: int = Field(0, ge=0), then: seed_type(minimum=-1, random=("random",)) = -1):
    """The seed as a number (``then``: -1 = unused, like Sample's "continue the stream")."""
    CALLS["Seeded"] += 1
    return float(seed + offset)


@node(outputs={"value": "NUMBER"}, category="test", cache="never")
def Clock():
    """Never cached: a new value every run."""
    CALLS["Clock"] += 1
    return time.perf_counter()


@node(outputs={"value": "NUMBER"}, category="test")
def Slow(value=Input("NUMBER"), steps: int = Field(5, ge=1), *, ctx):
    """Reports progress; stops when cancelled. Hook ``ON_STEP`` lets a test act mid-run."""
    CALLS["Slow"] += 1
    for i in range(steps):
        ON_STEP(i)
        ctx.progress(i + 1, steps)
    return value


ON_STEP = lambda i: None  # noqa: E731 — replaced by tests


@node(outputs={"value": "NUMBER"}, category="test")
def Fail(value=Input("NUMBER"), when: Literal["always", "never", "input"] = "always"):
    """Raises on demand."""
    CALLS["Fail"] += 1
    if when == "always":
        raise ValueError("boom")
    if when == "input":
        raise NodeInputError("when", "not usable here", expected="never", received="input")
    return value


@node(output=True, category="test")
def Show(value=Input("*"), label: str = ""):
    """Output node: reports the value."""
    CALLS["Show"] += 1
    return {"value": value if not isinstance(value, list) else len(value), "label": label}


@node(output=True, category="test")
def WriteNote(value=Input("NUMBER"), name: str = "notes/note.txt", *, ctx):
    """Output node writing a text file (an output of a kind other than images); ``name`` inside the output folder."""
    from graphflow.outputs import OutputFile

    path = Path(ctx.settings.output_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{value}\n")
    return [OutputFile("note", name, {"bytes": path.stat().st_size})]


def read_pairs_document(document, source, registry):
    """A toy second format for the document-reader hook: ``{"pairs": [[id, type, {literal inputs}], ...]}``
    (a node's ``from`` input names the node whose ``value`` feeds its input ``value``)."""
    from graphflow.errors import WorkflowFormatError
    from graphflow.workflow import Link, NodeEntry, Workflow

    if not isinstance(document, dict) or set(document) != {"pairs"}:
        return None
    nodes = {}
    for item in document["pairs"]:
        if not (isinstance(item, list) and len(item) == 3):
            raise WorkflowFormatError(f"{source}: each pair is [id, type, inputs], not {item!r}")
        node_id, node_type, inputs = item
        inputs = dict(inputs)
        if "from" in inputs:
            inputs["value"] = Link(inputs.pop("from"), "value")
        nodes[node_id] = NodeEntry(node_type, inputs)
    return Workflow(nodes)


GRAPHFLOW_PACK = NodePack(document_readers=(read_pairs_document,), png_text_chunks=("pairs",))
