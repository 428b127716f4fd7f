"""Every command in the README's ```sh blocks and every ```python block runs as written, so a new block is
tested by default.

Commands run with bash in a scratch folder that holds copies of ``workflows/`` and ``server.py`` (so they
write nothing into the repository), with ``python``/``python3``/``graphflow`` being this interpreter and this
checkout. Three kinds:

- commands that start the server (``python server.py``, ``graphflow serve``) run until /health answers, then
  get Ctrl-C; the only change is ``--port``, set to a free port;
- commands that talk to a server (``$S``) run in order in one bash session (``ID`` and ``NAME`` carry over, as
  in a reader's terminal) against a server this test starts, with ``S`` set to its address; ``curl`` fails on
  an HTTP error answer, so a refused request fails the test;
- every other command must exit 0.

A ```python block runs as a script in the same folder; one that talks to ``http://127.0.0.1:8188`` talks to a
server this test starts instead (the address is the only change).

A command that cannot run in a test is listed in EXEMPT with the reason, one that needs a change to run here
in SUBSTITUTE, and the files a command expects the reader to have in FIXTURES. An entry that matches no README
command fails the test, so these lists stay true.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

EXEMPT = {
    "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/graphflow run workflows/txt2img.json":
        "creates a virtualenv and installs graphflow and torch from PyPI (minutes, network); the run it ends with "
        "is the `graphflow run workflows/txt2img.json --set ...` command of the Command line section",
    "python3 -m venv .venv && .venv/bin/pip install -q -c constraints.txt -e '.[test,ray,faces,codeformer]' && .venv/bin/python -m pytest -q":
        "installs from PyPI and runs this whole test suite, this test included",
    "python -m training.evaluate --model /tmp/toy           # the checks of meaning as a table, through graphflow workflows":
        "draws 300 pictures (minutes); ToyRuns, which it prints, is tested by tests/training/test_evaluate.py and "
        "tests/nodes/test_toy_meaning.py",
    "graphflow run workflows/hires_fix_model.json --set upscaler.name=RealESRGAN_x4plus.pth":
        "needs a real RealESRGAN_x4plus.pth (64 MB, not shipped); hires_fix_model.json itself is run by "
        "tests/workflows",
    "pip install -e '.[ray]'":
        "installs Ray from PyPI (network); the suite runs with the ray extra installed (.ci/run), and "
        "tests/server/test_ray.py needs it",
    "ray start --head --port 6379":
        "starts Ray's daemons for a cluster and leaves them running; tests/server/test_ray.py starts a local cluster "
        "with Ray's cluster utilities instead, and stops it",
    "ray start --address HEAD_IP:6379":
        "joins a head machine of a real cluster (HEAD_IP stands for its address); a joining machine is tested by "
        "tests/server/test_ray.py::test_a_machine_joining_the_cluster_brings_a_worker_that_takes_jobs",
    "GRAPHFLOW_TOKEN=$(openssl rand -hex 16) graphflow serve --ray auto --host 0.0.0.0 --models-dir /srv/models":
        "needs the cluster of the two `ray start` lines above and listens on every interface; a server joining a "
        "running cluster by address is what every test in tests/server/test_ray.py starts",
    'websocat "ws://127.0.0.1:8188/ws?job=$ID"':
        "websocat is no dependency of graphflow and stays connected until interrupted; /ws is tested by tests/server",
}
SUBSTITUTE = {
    "python -m training.train_toy --out /tmp/toy            # retrain (about 30 min; --smoke for a 1-minute check)":
        ("python -m training.train_toy --out toy --smoke --vae-steps 2 --unet-steps 3 --dataset-size 24 --threads 1",
         "the training takes 30 minutes and its --smoke check (which the line names) 1-2: run the smoke check cut "
         "to a few steps with train_toy's own flags, into the scratch folder"),
    "python server.py --port 9000 --data-dir /srv/gf --models-dir /srv/models":
        ("python server.py --port 9000 --data-dir srv/gf --models-dir srv/models",
         "a test writes nothing outside its scratch folder"),
    "curl -s -o out.png $S/outputs/txt2img_00001.png":
        ("wait_until_idle && curl -s -o out.png $S/outputs/txt2img_00001.png && file_is_png out.png",
         "a reader fetches the image once the job has finished; then check it is one"),
}
# Files a command expects the reader to have (path in the scratch folder: repository file it is a copy of).
FIXTURES = {
    "graphflow run workflows/inpaint.json --set image.name=photo.png --set image.mask=photo_mask.png --inputs my_pictures":
        {"my_pictures/photo.png": "workflows/assets/input.png", "my_pictures/photo_mask.png": "workflows/assets/inpaint_mask.png"},
    "curl -s -F image=@photo.jpg $S/uploads": {"photo.jpg": "JPEG of workflows/assets/input.png"},
}
# A $S command whose HTTP error answer is one of the outcomes the README describes.
MAY_ANSWER_AN_ERROR = {
    "curl -s -X DELETE $S/jobs/$ID": "the job may have finished already: 409, as the README says",
}
SESSION_PRELUDE = r"""
set -o pipefail
curl() { if [ -n "${CURL_ERRORS_OK-}" ]; then command curl "$@"; else command curl --fail-with-body "$@"; fi; }
wait_until_idle() {
  for _ in $(seq 600); do
    command curl -s "$S/health" | jq -e '.queue == 0 and .running == null' > /dev/null && return 0
    sleep 0.5
  done
  echo "the server's queue did not empty" >&2; return 1
}
file_is_png() { head -c 8 "$1" | od -An -c | grep -q 'P   N   G'; }
"""


@dataclass(frozen=True)
class Command:
    line: int  # in README.md
    text: str  # as written

    @property
    def kind(self) -> str:
        if "$S" in self.text:
            return "api"
        if re.search(r"(^|\s)(python3? server\.py|graphflow serve)\b", self.text):
            return "server"
        return "shell"

    def runnable(self) -> str:
        return SUBSTITUTE[self.text][0] if self.text in SUBSTITUTE else self.text


def readme_commands() -> list[Command]:
    """The commands of every ```sh block: one per line (backslash continuations joined), comment lines dropped."""
    commands, block_start, pending = [], None, ""
    for number, line in enumerate(README.read_text(encoding="utf-8").splitlines(), start=1):
        if block_start is None:
            if line.strip() == "```sh":
                block_start = number
            continue
        if line.strip() == "```":
            block_start = None
            continue
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        commands.append(Command(number, pending.strip()))
        pending = ""
    return commands


COMMANDS = readme_commands()


def of_kind(kind: str) -> list:
    return [pytest.param(c, id=f"README.md:{c.line}") for c in COMMANDS if c.kind == kind and c.text not in EXEMPT]


def test_every_exemption_substitution_and_fixture_names_a_readme_command():
    texts = {c.text for c in COMMANDS}
    for table in (EXEMPT, SUBSTITUTE, FIXTURES, MAY_ANSWER_AN_ERROR):
        assert set(table) <= texts, f"no such README command: {sorted(set(table) - texts)}"
    assert len(COMMANDS) - len(EXEMPT) >= 15 and len(python_blocks()) >= 3, "the README's blocks were not found"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> dict:
    """The folder commands run in, and their environment."""
    root = tmp_path_factory.mktemp("readme")
    shutil.copytree(ROOT / "workflows", root / "workflows")
    shutil.copy(ROOT / "server.py", root / "server.py")
    bin_dir = root / ".bin"
    bin_dir.mkdir()
    for name, target in (("python", ""), ("python3", ""), ("graphflow", "-m graphflow ")):
        (bin_dir / name).write_text(f'#!/bin/sh\nexec "{sys.executable}" {target}"$@"\n')
        (bin_dir / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRAPHFLOW_")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(ROOT))
    return {"root": root, "env": env}


def make_fixtures(command: Command, root: Path) -> None:
    from PIL import Image

    for relative, source in FIXTURES.get(command.text, {}).items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.startswith("JPEG of "):
            with Image.open(ROOT / source.removeprefix("JPEG of ")) as image:
                image.convert("RGB").save(target, format="JPEG")
        else:
            shutil.copy(ROOT / source, target)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def with_port(text: str, port: int) -> str:
    if "--port" in text:
        return re.sub(r"--port \d+", f"--port {port}", text)
    return re.sub(r"(server\.py|graphflow serve)", rf"\1 --port {port}", text, count=1)


def health(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return json.load(response)
    except OSError:
        return None


def start_server(text: str, scratch: dict, port: int) -> subprocess.Popen:
    process = subprocess.Popen(["bash", "-c", with_port(text, port)], cwd=scratch["root"], env=scratch["env"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while health(port) is None:
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            pytest.fail(f"{text!r} did not start a server: {process.communicate()[1]}")
        time.sleep(0.2)
    return process


def stop(process: subprocess.Popen) -> str:
    """Ctrl-C, as in a terminal: SIGINT to the command's process group (bash and the server it started)."""
    os.killpg(process.pid, signal.SIGINT)
    try:
        return process.communicate(timeout=30)[1]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("command", of_kind("shell"))
def test_the_command_runs(command, scratch):
    make_fixtures(command, scratch["root"])
    result = subprocess.run(["bash", "-c", command.runnable()], cwd=scratch["root"], env=scratch["env"],
                            capture_output=True, text=True, timeout=840)
    assert result.returncode == 0, f"README.md:{command.line}: {command.runnable()}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr


@pytest.mark.timeout(300)
@pytest.mark.parametrize("command", of_kind("server"))
def test_the_server_command_serves_and_stops_on_ctrl_c(command, scratch):
    process = start_server(command.runnable(), scratch, port := free_port())
    assert health(port)["status"] == "ok"
    stderr = stop(process)
    assert process.returncode == 0 and "Traceback" not in stderr, stderr


@pytest.mark.timeout(900)
def test_the_api_commands_run_in_order_against_a_server(scratch, tmp_path):
    commands = [c for c in COMMANDS if c.kind == "api" and c.text not in EXEMPT]
    lines = [SESSION_PRELUDE]
    for number, command in enumerate(commands):
        make_fixtures(command, scratch["root"])
        prefix = "CURL_ERRORS_OK=1 " if command.text in MAY_ANSWER_AN_ERROR else ""
        # Answers end without a newline: start the status line on a line of its own.
        lines += [f"echo '::run {number}'", f"{prefix}{command.runnable()}", f"status=$?; echo; echo \"::status {number} $status\""]
    script = tmp_path / "session.sh"
    script.write_text("\n".join(lines) + "\nwait_until_idle\n")
    process = start_server(f"python server.py --data-dir {tmp_path / 'data'}", scratch, port := free_port())
    try:
        env = {**scratch["env"], "S": f"http://127.0.0.1:{port}"}
        result = subprocess.run(["bash", str(script)], cwd=scratch["root"], env=env, capture_output=True, text=True,
                                timeout=840)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/jobs?status=failed", timeout=10) as response:
            failed = json.load(response)["jobs"]
    finally:
        stop(process)
    statuses = dict(re.findall(r"^::status (\d+) (\d+)$", result.stdout, re.MULTILINE))
    for number, command in enumerate(commands):
        assert statuses.get(str(number)) == "0", (
            f"README.md:{command.line}: {command.runnable()}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    assert result.returncode == 0, result.stderr
    assert failed == [], "jobs the README's commands submitted failed"


DEFAULT_ADDRESS = "http://127.0.0.1:8188"


def python_blocks() -> list:
    blocks, start, lines = [], None, []
    for number, line in enumerate(README.read_text(encoding="utf-8").splitlines(), start=1):
        if start is None:
            if line.strip() == "```python":
                start, lines = number, []
        elif line.strip() == "```":
            blocks.append(pytest.param("\n".join(lines) + "\n", id=f"README.md:{start}"))
            start = None
        else:
            lines.append(line)
    return blocks


@pytest.mark.timeout(900)
@pytest.mark.parametrize("code", python_blocks())
def test_the_python_block_runs(code, scratch, tmp_path):
    process = None
    if DEFAULT_ADDRESS in code:
        process = start_server(f"python server.py --data-dir {tmp_path / 'data'}", scratch, port := free_port())
        code = code.replace(DEFAULT_ADDRESS, f"http://127.0.0.1:{port}")
    try:
        result = subprocess.run([sys.executable, "-c", code], cwd=scratch["root"], env=scratch["env"],
                                capture_output=True, text=True, timeout=840)
    finally:
        if process is not None:
            stop(process)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr


def test_every_set_example_names_a_node_input_of_a_shipped_workflow():
    """`--set NODE.INPUT=...` in the README's prose is not run, so check it names something real."""
    from graphflow.documents import read_file
    from graphflow.registry import default_registry

    registry = default_registry()
    accepted: dict[str, set[str]] = {}
    for path in [*(ROOT / "workflows").glob("*.json"), *(ROOT / "workflows" / "comfyui").glob("*.json")]:
        for node_id, node in read_file(path, registry).nodes.items():  # ComfyUI's formats too
            spec = registry.get(node.type)
            accepted.setdefault(node_id, set()).update([*spec.sockets, *spec.literal_names])
    examples = set(re.findall(r"--set (\w+)\.(\w+)=", README.read_text(encoding="utf-8"))) - {("NODE", "INPUT")}
    assert examples, "no --set examples found"
    wrong = sorted(f"{node}.{name}" for node, name in examples if name not in accepted.get(node, ()))
    assert wrong == [], "README --set examples that name no node input of any shipped workflow"
