"""Server start: an unusable data directory is one clear line, and a save killed mid-write leaves nothing behind."""
import os
import signal
import subprocess
import sys
from pathlib import Path

from graphflow.server import serve_from_args

ROOT = Path(__file__).resolve().parents[2]

# A child that writes an output the way every node does and is killed with SIGKILL in the middle of it.
HALF_WRITTEN = """
import sys, time
from pathlib import Path
from graphflow.paths import atomic_write

def writer(file):
    file.write(b"half a png")
    file.flush()
    print("writing", flush=True)
    time.sleep(60)

atomic_write(Path(sys.argv[1]) / "graphflow_00001.png", writer)
"""


def kill_mid_write(folder: Path) -> list[Path]:
    child = subprocess.Popen([sys.executable, "-c", HALF_WRITTEN, str(folder)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert child.stdout.readline().strip() == "writing"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    return list(folder.iterdir())


def test_the_next_start_sweeps_what_a_killed_save_left(data_dir, start_server):
    outputs, uploads = data_dir / "outputs", data_dir / "uploads"
    outputs.mkdir(parents=True)
    uploads.mkdir()
    left = kill_mid_write(outputs)
    assert len(left) == 1 and left[0].name.startswith(".graphflow_00001.png.") and left[0].name.endswith(".tmp")
    (outputs / "graphflow_00002.png").write_bytes(b"a finished image")
    (outputs / ".keep").write_text("not ours")
    (uploads / ".abc.png.12345678.tmp").write_bytes(b"an interrupted upload")
    start_server()
    assert sorted(p.name for p in outputs.iterdir()) == [".keep", "graphflow_00002.png"]
    assert list(uploads.iterdir()) == []


def test_a_data_dir_that_is_a_file_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "data").write_text("a file")
    assert serve_from_args(["--data-dir", str(tmp_path / "data"), "--port", "0"]) == 1
    assert capsys.readouterr().err.strip() == (
        f"error: cannot start the server: --data-dir {tmp_path / 'data'}: expected a folder to write to, received a file")
