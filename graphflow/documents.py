"""Reading a workflow document, whatever format it is in. Every entry point reads documents here: the CLI
(``run``, ``validate``, ``convert``, ``--from-png``), the Python API (:class:`~graphflow.execute.Engine`,
:meth:`~graphflow.builder.Graph.from_json`) and the server's ``POST /jobs``.

A document in graphflow's own format (``{"graphflow": 1, "nodes": {...}}``) is parsed as such. Any other
document is offered to the readers the node packs declare (``NodePack.document_readers``), in discovery order;
the first that recognises it returns the Workflow. One that no reader recognises gets graphflow's own shape
errors. A PNG file carries its document in a text chunk: graphflow's own (:data:`PNG_CHUNK`), then the chunks
packs name (``NodePack.png_text_chunks``), then :data:`LEGACY_PNG_CHUNK`, where graphflow wrote it before.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import WorkflowFormatError
from .workflow import Workflow, decode_json, parse
from .workflow import read_text as read_text_file

if TYPE_CHECKING:
    from .registry import Registry

PNG_CHUNK = "graphflow"  # graphflow's own name: other tools' "workflow" chunks hold their own formats
LEGACY_PNG_CHUNK = "workflow"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_document(document: Any, source: str = "workflow", registry: "Registry | None" = None) -> Workflow:
    """The Workflow a decoded JSON document describes, in graphflow's format or one a node pack reads."""
    if isinstance(document, dict) and "graphflow" in document:
        return parse(document, source)
    registry = registry if registry is not None else _default_registry()
    for reader in registry.document_readers:
        workflow = reader(document, source, registry)
        if workflow is not None:
            return workflow
    return parse(document, source)


def read_text(text: str, source: str = "workflow", registry: "Registry | None" = None) -> Workflow:
    """:func:`read_document` of JSON text, decoded strictly (:func:`graphflow.workflow.decode_json`: malformed
    JSON, unusable numbers and too deep nesting become one-line errors)."""
    return read_document(decode_json(text, source), source, registry)


def read_file(path: str | Path, registry: "Registry | None" = None) -> Workflow:
    """The workflow in a JSON file, or in a PNG's text chunks (told apart by the PNG signature, not the name)."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            is_png = file.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE
    except OSError as exc:
        raise WorkflowFormatError(f"cannot read {path}: {exc.strerror or exc}") from None
    if is_png:
        return read_png(path, registry)
    return read_text(read_text_file(path), str(path), registry)  # a non-UTF-8 file is named with its first bad byte


def read_png(path: str | Path, registry: "Registry | None" = None) -> Workflow:
    """The workflow a PNG carries in its text chunks (output nodes write the workflow as it ran there)."""
    from PIL import Image, UnidentifiedImageError

    registry = registry if registry is not None else _default_registry()
    chunks = [PNG_CHUNK, *registry.png_text_chunks, LEGACY_PNG_CHUNK]
    try:
        with Image.open(path) as picture:
            texts = dict(picture.text) if picture.format == "PNG" else {}
    except (OSError, UnidentifiedImageError) as exc:
        raise WorkflowFormatError(f"{path}: not a readable PNG ({exc})") from None
    for chunk in dict.fromkeys(chunks):
        if chunk in texts:
            return read_text(texts[chunk], f"{path} (its {chunk} chunk)", registry)
    names = ", ".join(f'"{c}"' for c in dict.fromkeys(chunks))
    raise WorkflowFormatError(f"{path}: this image carries no workflow (no text chunk {names}; "
                              "graphflow's image-saving output nodes write one)")


def _default_registry() -> "Registry":
    from .registry import default_registry

    return default_registry()
