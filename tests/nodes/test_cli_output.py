"""What a real `graphflow run` of a shipped workflow prints and writes: graphflow's own lines only (no library
progress bars, no library warnings), the path of the PNG it wrote, and a PNG with the mode the umask gives."""
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OUR_LINES = [
    r"\S+ \(\w+\) \d+\.\d\ds",             # a node finished
    r"\S+ \(\w+\) cached",                 # a node came from the cache
    r"\S+ \[[#.]+\] \d+/\d+",              # the progress bar of a long node
    r"\S+: warning: .+",                   # a node's warning event
    r"done in \d+\.\d\ds: \d+ executed, \d+ cached(; seed \S+=\d+(, \S+=\d+)*)?",  # with the seeds used
]


def quiet_env() -> dict:
    """The variables that would bring the libraries' noise back are not set; a user's environment may set them."""
    quiet = ("HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY", "PYTHONWARNINGS")
    env = {k: v for k, v in os.environ.items() if k not in quiet and not k.startswith("GRAPHFLOW_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.fixture(scope="module")
def txt2img(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli-run")
    result = subprocess.run([sys.executable, "-m", "graphflow", "run", "workflows/txt2img.json",
                             "--set", "schedule.steps=2", "--out", str(out)],
                            cwd=ROOT, env=quiet_env(), capture_output=True, text=True, timeout=600,
                            preexec_fn=lambda: os.umask(0o022))  # the usual umask, whatever this session's is
    assert result.returncode == 0, result.stderr
    return result, out


def assert_only_our_lines(stderr: str) -> None:
    pieces = [p.strip() for p in re.split(r"[\r\n]", stderr) if p.strip()]
    foreign = [p for p in pieces if not any(re.fullmatch(pattern, p) for pattern in OUR_LINES)]
    assert foreign == [], "a library printed to stderr"
    assert pieces[-1].startswith("done in")


def test_stderr_holds_only_graphflows_own_lines(txt2img):
    assert_only_our_lines(txt2img[0].stderr)


def test_the_face_restoration_libraries_print_nothing_either(tmp_path):
    # facexlib, spandrel and spandrel_extra_arches import modules that warn (deprecated torch.jit.script, ...)
    result = subprocess.run([sys.executable, "-m", "graphflow", "run", "workflows/face_restore.json", "--out",
                             str(tmp_path)], cwd=ROOT, env=quiet_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert_only_our_lines(result.stderr)


def test_stdout_is_the_path_of_the_png_written(txt2img):
    result, out = txt2img
    assert result.stdout.splitlines() == [str(out / "txt2img_00001.png")]
    assert (out / "txt2img_00001.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_png_has_the_mode_any_new_file_gets(txt2img):
    """0644 under umask 022, as for any file the user's programs create (mkstemp's 0600 would hide it from others)."""
    _, out = txt2img
    assert oct(stat.S_IMODE((out / "txt2img_00001.png").stat().st_mode)) == oct(0o644)
