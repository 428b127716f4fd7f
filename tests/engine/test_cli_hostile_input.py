"""Input no JSON parser should choke on quietly: the CLI refuses it with exit 2 and one line naming the problem,
never a traceback — whether it comes in the workflow file or through ``--set``."""
import pytest

from .conftest import chain
from .test_cli import cli

DIGITS = "9" * 5000
DEEP = "[" * 990 + "]" * 990


def refused(result, *words):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "Error:" not in result.stderr.split("error:")[0]
    line = result.stderr.strip().splitlines()[-1]
    for word in words:
        assert word in line, line


def workflow_text(value: str) -> str:
    return ('{"graphflow": 1, "nodes": {"x": {"type": "Number", "inputs": {"value": %s}}, '
            '"s": {"type": "Show", "inputs": {"value": {"from": "x", "output": "value"}}}}}' % value)


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_workflow_file_that_is_not_utf8(tmp_path, command):
    path = tmp_path / "w.json"
    path.write_bytes(b"\xff\xfe" + workflow_text("1").encode("utf-16-le"))
    refused(cli(command, str(path), cwd=tmp_path), "w.json", "not UTF-8", "0xff")


@pytest.mark.parametrize("value, words", [
    (DIGITS, ("5000 digits",)),
    (DEEP, ("nested too deeply",)),
    ("NaN", ("NaN",)),
    ("1e999", ("too large",)),
])
def test_json_no_parser_reads_alike_in_the_file(tmp_path, value, words):
    path = tmp_path / "w.json"
    path.write_text(workflow_text(value))
    refused(cli("validate", str(path), cwd=tmp_path), "w.json", *words)


@pytest.mark.parametrize("value, words", [(DIGITS, ("5000 digits",)), (DEEP, ("nested too deeply",))])
def test_the_same_through_set(tmp_path, value, words):
    import json

    path = tmp_path / "w.json"
    path.write_text(json.dumps(chain()))
    refused(cli("validate", str(path), "--set", f"x.value={value}", cwd=tmp_path), "--set x.value", *words)


def test_a_set_value_that_is_no_json_stays_a_string(tmp_path):
    import json

    path = tmp_path / "w.json"
    path.write_text(json.dumps(chain()))
    result = cli("validate", str(path), "--set", "x.value=[not json", cwd=tmp_path)
    assert result.returncode == 2 and "x.value" in result.stderr and "[not json" in result.stderr
    assert "Traceback" not in result.stderr
