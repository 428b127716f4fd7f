"""Environment variables: every GRAPHFLOW_* variable is parsed, and a bad value is one clear line, never a traceback."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from graphflow import env
from graphflow.cache import ResultCache
from graphflow.context import Settings
from graphflow.env import EnvironmentInvalid, check_environment
from graphflow.server import serve_from_args

ROOT = Path(__file__).resolve().parents[2]

# One bad value for every variable graphflow reads; a new variable without an entry here fails the last test.
BAD_VALUES = {
    "GRAPHFLOW_MODELS_DIR": "FILE",
    "GRAPHFLOW_INPUT_DIR": "FILE",
    "GRAPHFLOW_OUTPUT_DIR": "FILE",
    "GRAPHFLOW_CACHE_DIR": "FILE",
    "GRAPHFLOW_CACHE_BYTES": "lots",
    "GRAPHFLOW_DISK_CACHE": "FILE",
    "GRAPHFLOW_DISK_CACHE_BYTES": "a lot",
    "GRAPHFLOW_MAX_MODELS": "-1",
    "GRAPHFLOW_CHECK_MUTATIONS": "maybe",
    "GRAPHFLOW_NODES": "not a module",
    "GRAPHFLOW_TOKEN": "two words",
}


@pytest.fixture
def clean_env(monkeypatch):
    for name in env.VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_sizes_counts_and_flags_parse(clean_env):
    for text, value in (("2147483648", 2**31), ("512MiB", 512 * 1024**2), ("2GiB", 2 * 1024**3), ("1.5G", 1_500_000_000),
                        ("64kb", 64_000), (" 10 ", 10)):
        clean_env.setenv("GRAPHFLOW_CACHE_BYTES", text)
        assert ResultCache().value_budget == value, text
    clean_env.setenv("GRAPHFLOW_MAX_MODELS", "5")
    assert ResultCache().max_models == 5
    for text, value in (("1", True), ("yes", True), ("ON", True), ("0", False), ("false", False), ("", False)):
        clean_env.setenv("GRAPHFLOW_CHECK_MUTATIONS", text)
        assert env.read("GRAPHFLOW_CHECK_MUTATIONS", False) is value, text


def test_unset_and_empty_variables_take_the_defaults(clean_env):
    clean_env.setenv("GRAPHFLOW_OUTPUT_DIR", "")
    assert ResultCache().value_budget == 2 * 1024**3 and Settings.from_env().output_dir == Path("outputs")
    assert check_environment() == []


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_a_bad_value_names_the_variable_what_it_expects_and_what_it_got(name, clean_env, tmp_path):
    value = str(tmp_path / "a-file") if BAD_VALUES[name] == "FILE" else BAD_VALUES[name]
    (tmp_path / "a-file").write_text("not a folder")
    clean_env.setenv(name, value)
    problems = check_environment()
    assert len(problems) == 1
    assert problems[0].startswith(f"environment variable {name}: expected ") and f"received {value!r}" in problems[0]


def test_the_library_raises_the_same_error(clean_env):
    clean_env.setenv("GRAPHFLOW_CACHE_BYTES", "lots")
    with pytest.raises(EnvironmentInvalid, match="GRAPHFLOW_CACHE_BYTES: expected a size in bytes"):
        ResultCache()


def cli(*args, cwd, **variables):
    environment = {k: v for k, v in os.environ.items() if k not in env.VARIABLES}
    environment.update({"PYTHONPATH": str(ROOT), "GRAPHFLOW_NODES": "tests.engine.toynodes", **variables})
    return subprocess.run([sys.executable, "-m", "graphflow", *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=60)


def test_the_cli_refuses_bad_variables_with_exit_2_and_one_line_each(tmp_path):
    (tmp_path / "w.json").write_text('{"graphflow": 1, "nodes": {}}')
    result = cli("validate", "w.json", cwd=tmp_path, GRAPHFLOW_CACHE_BYTES="lots", GRAPHFLOW_MAX_MODELS="three")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "error: environment variable GRAPHFLOW_CACHE_BYTES: expected a size in bytes such as 2147483648, 512MiB or 2GiB, received 'lots'",
        "error: environment variable GRAPHFLOW_MAX_MODELS: expected a whole number >= 0, received 'three'"]


def test_a_node_module_that_does_not_exist_is_named(tmp_path):
    result = cli("nodes", cwd=tmp_path, GRAPHFLOW_NODES="tests.engine.toynodes,no_such_pack")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == ("error: environment variable GRAPHFLOW_NODES: expected names of importable modules, "
                                     "received 'tests.engine.toynodes,no_such_pack' (there is no module named 'no_such_pack')")


def test_the_server_refuses_to_start_with_the_line(clean_env, tmp_path, capsys):
    clean_env.setenv("GRAPHFLOW_MAX_MODELS", "many")
    assert serve_from_args(["--data-dir", str(tmp_path), "--port", "0"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: cannot start the server: environment variable GRAPHFLOW_MAX_MODELS: expected a whole number >= 0, received 'many'")
    assert not (tmp_path / "jobs.sqlite").exists()


# A GRAPHFLOW_* name read from the environment directly rather than through graphflow.env.read.
DIRECT_READ = re.compile(r"(?:environ(?:\.get|\.setdefault)?|getenv)\s*[(\[]\s*[\"'](GRAPHFLOW_[A-Z_]+)[\"']")


def test_every_variable_the_code_reads_is_checked():
    read = set()
    for folder in ("graphflow", "nodes", "training"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            read |= set(DIRECT_READ.findall(text)) | set(re.findall(r"env\.read\(\s*[\"'](GRAPHFLOW_[A-Z_]+)", text))
    assert read <= set(env.VARIABLES), f"read but not in graphflow.env.VARIABLES: {sorted(read - set(env.VARIABLES))}"
    assert set(BAD_VALUES) == set(env.VARIABLES)
