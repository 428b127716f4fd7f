"""Output folders are checked before anything runs, and what an interrupted atomic write left behind is swept."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from graphflow.paths import UnusableFolder, atomic_write, check_writable_folder, sweep_temporaries

from .conftest import chain

ROOT = Path(__file__).resolve().parents[2]


def leftover(folder: Path, name: str = "graphflow_00001.png", age: float = 0.0) -> Path:
    """A temporary file exactly as atomic_write names it, as a process killed mid-write leaves it."""
    import tempfile

    handle, temp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    os.write(handle, b"half a png")
    os.close(handle)
    if age:
        os.utime(temp, (time.time() - age, time.time() - age))
    return Path(temp)


def test_a_file_or_a_folder_under_a_file_is_refused(tmp_path):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(UnusableFolder, match=r"^--out .*a-file: expected a folder to write to, received a file$"):
        check_writable_folder(tmp_path / "a-file", "--out")
    with pytest.raises(UnusableFolder, match=r"received .*a-file, which is a file$"):
        check_writable_folder(tmp_path / "a-file" / "sub", "--out")


def test_an_existing_or_creatable_folder_passes_and_nothing_is_created(tmp_path):
    check_writable_folder(tmp_path, "--out")
    check_writable_folder(tmp_path / "new" / "deeper", "--out")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o555)
    with pytest.raises(UnusableFolder, match="cannot write in the folder"):
        check_writable_folder(folder, "--out")
    with pytest.raises(UnusableFolder, match="cannot create the folder"):
        check_writable_folder(folder / "new", "--out")


def test_the_sweep_removes_only_our_temporaries(tmp_path):
    (tmp_path / "sub").mkdir()
    ours = [leftover(tmp_path), leftover(tmp_path / "sub", "merged_00001.safetensors")]
    kept = [tmp_path / name for name in ("graphflow_00001.png", ".hidden", ".notes.txt.tmp", "x.abcdefgh.tmp",
                                         ".a.png.ABCDEFGH.tmp", ".a.png.abcdefghi.tmp")]
    for path in kept:
        path.write_text("not ours")
    (tmp_path / "link").symlink_to(ours[0])
    assert sorted(sweep_temporaries(tmp_path)) == sorted(ours)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([p.name for p in kept] + ["link", "sub"])


def test_the_sweep_can_spare_recent_temporaries(tmp_path):
    fresh, old = leftover(tmp_path), leftover(tmp_path, "b.png", age=3600)
    assert sweep_temporaries(tmp_path, older_than=600) == [old]
    assert fresh.exists()


def test_a_temporary_folder_goes_whole_unless_something_in_it_changed_recently(tmp_path):
    def temporary_folder(name: str, age_inside: float) -> Path:
        folder = tmp_path / f".{name}.0123abcd.tmp"
        (folder / "unet").mkdir(parents=True)
        inside = leftover(folder / "unet", "weights.safetensors", age=age_inside)
        for path in (folder / "unet", folder):
            os.utime(path, (time.time() - 3600, time.time() - 3600))
        return inside

    temporary_folder("old-model", age_inside=3600)
    busy = temporary_folder("busy-model", age_inside=0)
    assert sweep_temporaries(tmp_path, older_than=600) == [tmp_path / ".old-model.0123abcd.tmp"]
    assert busy.exists() and not (tmp_path / ".old-model.0123abcd.tmp").exists()


def test_the_sweep_matches_what_atomic_write_leaves(tmp_path):
    class Killed(BaseException):
        pass

    def writer(file):
        file.write(b"half")
        leftovers.extend(p for p in tmp_path.iterdir())
        raise Killed

    leftovers: list[Path] = []
    with pytest.raises(Killed):
        atomic_write(tmp_path / "out.png", writer)
    assert len(leftovers) == 1 and sweep_temporaries(tmp_path) == [] and not leftovers[0].exists()
    (tmp_path / leftovers[0].name).write_bytes(b"as if the process had died")  # what a kill -9 leaves
    assert sweep_temporaries(tmp_path) == [tmp_path / leftovers[0].name]


def cli(*args, cwd, **variables):
    env = {k: v for k, v in os.environ.items() if k != "GRAPHFLOW_OUTPUT_DIR"}
    env.update({"GRAPHFLOW_NODES": "tests.engine.toynodes", "PYTHONPATH": str(ROOT), **variables})
    return subprocess.run([sys.executable, "-m", "graphflow", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_run_refuses_a_file_as_out_before_running_anything(tmp_path):
    (tmp_path / "w.json").write_text(json.dumps(chain()))
    (tmp_path / "taken").write_text("a file")
    result = cli("run", "w.json", "--out", "taken", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == "error: --out taken: expected a folder to write to, received a file"
    assert "executed" not in result.stderr and result.stdout == ""


def test_run_sweeps_old_leftovers_of_interrupted_writes_before_writing(tmp_path):
    (tmp_path / "w.json").write_text(json.dumps(chain()))
    out = tmp_path / "out"
    out.mkdir()
    old, fresh = leftover(out, age=3600), leftover(out, "b.png")
    (out / "graphflow_00001.png").write_text("kept")
    result = cli("run", "w.json", cwd=tmp_path, GRAPHFLOW_OUTPUT_DIR=str(out))
    assert result.returncode == 0, result.stderr
    assert not old.exists() and fresh.exists() and (out / "graphflow_00001.png").read_text() == "kept"
