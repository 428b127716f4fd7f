"""The CLI: exit codes distinguish invalid input (2) from runtime failure (1); errors are readable text."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import chain, link, wf

ROOT = Path(__file__).resolve().parents[2]


def cli(*args, cwd):
    env = {**os.environ, "GRAPHFLOW_NODES": "tests.engine.toynodes", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "graphflow", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def write(tmp_path):
    def write(doc, name="w.json"):
        path = tmp_path / name
        path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
        return str(path)
    return write


def test_validate_ok_and_invalid(write, tmp_path):
    assert cli("validate", write(chain()), cwd=tmp_path).returncode == 0
    doc = chain()
    doc["nodes"]["x"]["inputs"]["a"] = link("desc")
    doc["nodes"]["desc"]["inputs"]["value"] = link("show")
    result = cli("validate", write(doc), cwd=tmp_path)
    assert result.returncode == 2
    assert "x.a: unknown input" in result.stderr and "Traceback" not in result.stderr


def test_validate_names_the_cycle(write, tmp_path):
    doc = wf(a=("Add", {"a": link("b")}), b=("Add", {"a": link("a")}), s=("Show", {"value": link("a")}))
    result = cli("validate", write(doc), cwd=tmp_path)
    assert result.returncode == 2 and ("cycle: a → b → a" in result.stderr or "cycle: b → a → b" in result.stderr)


def test_malformed_json_is_one_line(write, tmp_path):
    result = cli("validate", write('{"graphflow": 1,,}'), cwd=tmp_path)
    assert result.returncode == 2
    assert "line 1, column 17" in result.stderr and "Traceback" not in result.stderr


def test_run_with_set_overrides(write, tmp_path):
    result = cli("run", write(chain()), "--set", "y.value=40", "--set", "show.label=hi", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "5 executed" in result.stderr


def test_run_failure_exits_1_with_node_named(write, tmp_path):
    doc = wf(n=("Number", {"value": 1.0}), f=("Fail", {"value": link("n")}), s=("Show", {"value": link("f")}))
    result = cli("run", write(doc), cwd=tmp_path)
    assert result.returncode == 1
    assert "node f (Fail) failed: ValueError: boom" in result.stderr and "Traceback" not in result.stderr


def test_bad_set_and_missing_file_exit_2(write, tmp_path):
    assert cli("run", write(chain()), "--set", "nope", cwd=tmp_path).returncode == 2
    assert cli("run", write(chain()), "--set", "ghost.value=1", cwd=tmp_path).returncode == 2
    result = cli("run", str(tmp_path / "absent.json"), cwd=tmp_path)
    assert result.returncode == 2 and "cannot read" in result.stderr


def test_nodes_and_schema(tmp_path):
    listing = cli("nodes", cwd=tmp_path)
    assert listing.returncode == 0 and "Add  [test]" in listing.stdout
    catalog = json.loads(cli("nodes", "--json", cwd=tmp_path).stdout)
    assert catalog["Add"]["inputs"]["bias"]["default"] == 0
    schema = json.loads(cli("schema", cwd=tmp_path).stdout)
    assert schema["properties"]["graphflow"]["const"] == 1 and "Link" in schema["$defs"]


def test_run_prints_every_file_written_whatever_its_kind(write, tmp_path):
    doc = wf(x=("Number", {"value": 4}), note=("WriteNote", {"value": link("x"), "name": "deep/n.txt"}),
             show=("Show", {"value": link("x")}))
    result = cli("run", write(doc), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [str(tmp_path / "out" / "deep" / "n.txt")]
    assert (tmp_path / "out" / "deep" / "n.txt").read_text() == "4.0\n"


def png_with_text(path, **chunks):
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    Image.new("RGB", (2, 2)).save(path, pnginfo=info)
    return str(path)


def test_run_from_png_reruns_the_workflow_it_carries(tmp_path):
    doc = wf(x=("Number", {"value": 6}), note=("WriteNote", {"value": link("x")}))
    png = png_with_text(tmp_path / "made.png", workflow=json.dumps(doc), parameters="Size: 2x2")
    result = cli("run", "--from-png", png, "--set", "x.value=8", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "notes" / "note.txt").read_text() == "8.0\n"


def test_run_from_png_refuses_pictures_without_a_workflow(write, tmp_path):
    bare = png_with_text(tmp_path / "bare.png", parameters="Steps: 20, Sampler: Euler, Seed: 1")
    (tmp_path / "text.png").write_text("not a picture")
    for path, message in ((bare, "carries no workflow"), (str(tmp_path / "text.png"), "not a readable PNG")):
        result = cli("run", "--from-png", path, cwd=tmp_path)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    both = cli("run", write(chain()), "--from-png", bare, cwd=tmp_path)
    assert both.returncode == 2 and "one of them" in both.stderr


def test_missing_files_exit_2_in_validate_and_run_before_anything_runs(write, tmp_path):
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "seven.txt").write_text("7")
    doc = wf(a=("LoadNumber", {"name": "sevn.txt"}), b=("LoadNumber", {"name": "eight.txt"}),
             sum=("Add", {"a": link("a"), "b": link("b")}), s=("Show", {"value": link("sum")}))
    path = write(doc)
    for command in ("validate", "run"):
        result = cli(command, path, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert "a.name: no file 'sevn.txt'; did you mean 'seven.txt'?" in result.stderr
        assert "b.name: no file 'eight.txt'" in result.stderr and "executed" not in result.stderr
    fixed = cli("validate", path, "--set", "a.name=seven.txt", "--set", "b.name=seven.txt", cwd=tmp_path)
    assert fixed.returncode == 0, fixed.stderr


def test_files_next_to_the_workflow_in_assets_resolve(write, tmp_path):
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "n.txt").write_text("3")
    path = write(wf(a=("LoadNumber", {"name": "n.txt"}), s=("Show", {"value": link("a")})))
    assert cli("validate", path, cwd=tmp_path).returncode == 0


def seeds_printed(stderr):
    import re

    return [int(s) for s in re.findall(r"seed n\.seed=(\d+)", stderr)]


def test_repeat_counts_a_fixed_seed_up_and_draws_random_ones_anew(write, tmp_path):
    doc = wf(n=("Seeded", {"seed": 5}), s=("Show", {"value": link("n")}))
    fixed = cli("run", write(doc), "--repeat", "3", cwd=tmp_path)
    assert fixed.returncode == 0, fixed.stderr
    assert seeds_printed(fixed.stderr) == [5, 6, 7] and "run 3/3 done" in fixed.stderr
    random = cli("run", write(doc), "--repeat", "3", "--set", "n.seed=-1", cwd=tmp_path)
    assert random.returncode == 0, random.stderr
    drawn = seeds_printed(random.stderr)
    assert len(drawn) == 3 and len(set(drawn)) == 3
    once = cli("run", write(doc), cwd=tmp_path)
    assert seeds_printed(once.stderr) == [5] and "run 1/" not in once.stderr


@pytest.mark.parametrize("count", ["0", "-2", "many"])
def test_repeat_needs_a_positive_count(write, tmp_path, count):
    result = cli("run", write(chain()), "--repeat", count, cwd=tmp_path)
    assert result.returncode == 2 and "expected a whole number >= 1" in result.stderr


def test_a_nodes_warning_gets_a_line_of_its_own_on_stderr():
    import io

    from graphflow.cli import ProgressPrinter
    from graphflow.events import Progress, Warning_

    stream = io.StringIO()
    printer = ProgressPrinter(stream)
    printer(Progress(run_id="r", node="faces", value=1, max=2))
    printer(Warning_(run_id="r", node="faces", message="no face found: the image passes unchanged"))
    assert stream.getvalue().splitlines()[-1].strip() == "faces: warning: no face found: the image passes unchanged"
