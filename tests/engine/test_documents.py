"""Reading documents: graphflow's own format, the formats node packs read (NodePack.document_readers), PNG chunks;
every entry point (Engine, Graph.from_json, the CLI's run/validate/convert/--from-png) reads through one function."""
import json

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from graphflow.builder import Graph
from graphflow.documents import PNG_CHUNK, read_document, read_file, read_text
from graphflow.errors import WorkflowFormatError
from graphflow.registry import NodePack, Registry
from graphflow.workflow import Link

from . import toynodes
from .conftest import link, wf
from .test_cli import cli

PAIRS = {"pairs": [["x", "Number", {"value": 3}], ["s", "WriteNote", {"from": "x"}]]}


def test_a_graphflow_document_is_parsed_as_such(registry):
    workflow = read_document(wf(x=("Number", {"value": 2})), "doc", registry)
    assert workflow.nodes["x"].type == "Number" and workflow.nodes["x"].inputs == {"value": 2}


def test_a_pack_reader_reads_its_own_format(registry):
    workflow = read_document(PAIRS, "doc", registry)
    assert workflow.nodes["s"].inputs == {"value": Link("x", "value")}


def test_a_document_no_reader_recognises_gets_graphflows_shape_errors(registry):
    with pytest.raises(WorkflowFormatError, match="doc: not a graphflow workflow"):
        read_document({"something": "else"}, "doc", registry)


def test_a_reader_that_recognises_a_malformed_document_names_the_source(registry):
    with pytest.raises(WorkflowFormatError, match=r"doc: each pair is \[id, type, inputs\]"):
        read_document({"pairs": [["x"]]}, "doc", registry)


def test_readers_are_tried_in_discovery_order_and_declared_once():
    calls = []

    def first(document, source, registry):
        calls.append("first")
        return None

    registry = Registry()
    registry.add_pack(NodePack(document_readers=(first,), png_text_chunks=("a",)))
    registry.add_pack(NodePack(document_readers=(first, toynodes.read_pairs_document), png_text_chunks=("a", "b")))
    registry.add_module(toynodes)
    assert registry.document_readers == [first, toynodes.read_pairs_document]
    assert registry.png_text_chunks == ["a", "b", "pairs"]
    assert "s" in read_document(PAIRS, "doc", registry).nodes and calls == ["first"]


def test_malformed_json_text_is_one_line(registry):
    with pytest.raises(WorkflowFormatError, match="t.json: invalid JSON at line 1, column 2"):
        read_text("{,}", "t.json", registry)


def test_engine_and_builder_read_other_formats(engine, registry, tmp_path):
    report = engine.run(PAIRS)
    assert report.executed == ["x", "s"]
    assert (tmp_path / "out" / "notes" / "note.txt").read_text() == "3.0\n"
    assert Graph.from_json(PAIRS, registry).to_json()["nodes"]["s"]["inputs"] == {"value": link("x")}


def png_with_text(path, **chunks):
    info = PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    Image.new("RGB", (2, 2)).save(path, format="PNG", pnginfo=info)
    return path


def test_png_chunks_graphflow_first_then_the_packs_then_the_old_workflow_chunk(registry, tmp_path):
    own = json.dumps(wf(own=("Number", {})))
    old = json.dumps(wf(old=("Number", {})))
    pairs = json.dumps({"pairs": [["pack", "Number", {}]]})
    assert list(read_file(png_with_text(tmp_path / "a.png", workflow=old, pairs=pairs, **{PNG_CHUNK: own}), registry).nodes) == ["own"]
    assert list(read_file(png_with_text(tmp_path / "b.png", workflow=old, pairs=pairs), registry).nodes) == ["pack"]
    assert list(read_file(png_with_text(tmp_path / "c.png", workflow=old), registry).nodes) == ["old"]
    with pytest.raises(WorkflowFormatError, match='carries no workflow.*"graphflow", "pairs", "workflow"'):
        read_file(png_with_text(tmp_path / "d.png", parameters="Steps: 20"), registry)


def test_a_png_is_told_apart_by_its_signature_not_its_name(registry, tmp_path):
    renamed = png_with_text(tmp_path / "picture.json", **{PNG_CHUNK: json.dumps(wf(n=("Number", {})))})
    assert list(read_file(renamed, registry).nodes) == ["n"]
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00junk")
    with pytest.raises(WorkflowFormatError, match="not UTF-8 text .byte 0xff at offset 0."):
        read_file(tmp_path / "binary.json", registry)


def test_cli_run_validate_and_png_read_other_formats(tmp_path):
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(PAIRS))
    assert cli("validate", str(path), cwd=tmp_path).returncode == 0
    result = cli("run", str(path), "--set", "x.value=5", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "notes" / "note.txt").read_text() == "5.0\n"
    png = png_with_text(tmp_path / "p.png", pairs=json.dumps(PAIRS))
    for args in (["run", str(png)], ["run", "--from-png", str(png)]):
        result = cli(*args, "--out", str(tmp_path / "png-out"), cwd=tmp_path)
        assert result.returncode == 0, result.stderr


def test_cli_convert_writes_the_graphflow_workflow(tmp_path):
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(PAIRS))
    printed = cli("convert", str(path), cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    expected = wf(x=("Number", {"value": 3}), s=("WriteNote", {"value": link("x")}))
    assert json.loads(printed.stdout) == expected
    written = cli("convert", str(path), "-o", str(tmp_path / "out.json"), cwd=tmp_path)
    assert written.returncode == 0 and json.loads((tmp_path / "out.json").read_text()) == expected
    bad = cli("convert", str(tmp_path / "missing.json"), cwd=tmp_path)
    assert bad.returncode == 2 and "cannot read" in bad.stderr and "Traceback" not in bad.stderr
