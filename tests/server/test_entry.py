"""The command line: options become a ServerConfig, and `python server.py` really serves and stops cleanly."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from graphflow.server import LOOPBACK_HOSTS, build_parser, config_from_args

REPO = Path(__file__).resolve().parents[2]


def config(*argv: str, env_token: str | None = None, monkeypatch=None):
    if env_token is not None:
        monkeypatch.setenv("GRAPHFLOW_TOKEN", env_token)
    return config_from_args(build_parser().parse_args(list(argv)))


def test_defaults_are_loopback_only_and_tokenless(monkeypatch):
    monkeypatch.delenv("GRAPHFLOW_TOKEN", raising=False)
    cfg = config()
    assert cfg.token is None and cfg.allowed_hosts == LOOPBACK_HOSTS and cfg.data_dir == Path("graphflow-data")
    assert cfg.limits.max_literal == {}  # the server puts the node packs' defaults under what the flags set


def test_options_and_environment(monkeypatch):
    cfg = config("--host", "0.0.0.0", "--data-dir", "/tmp/x", "--max-literal", "steps=50", "--max-literal", "cfg=30",
                 "--max-body", "1000", env_token="from-env", monkeypatch=monkeypatch)
    assert cfg.token == "from-env" and cfg.allowed_hosts is None  # bound to all interfaces: any Host
    assert cfg.limits.max_literal == {"steps": 50, "cfg": 30} and cfg.limits.max_body_bytes == 1000
    pack_defaults = {"steps": 200, "batch_size": 16}
    assert cfg.limits.over_defaults(pack_defaults).max_literal == {"steps": 50, "batch_size": 16, "cfg": 30}
    assert config("--token", "flag", "--allow-host", "Box.lan", env_token="env", monkeypatch=monkeypatch).token == "flag"
    assert "box.lan" in config("--allow-host", "Box.lan").allowed_hosts
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--max-literal", "steps"])


def test_ray_options_are_given_only_with_ray():
    assert config().ray is None
    local = config("--ray").ray
    assert (local.address, local.workers, local.worker_cpus, local.namespace) == (None, None, 1.0, "graphflow")
    cluster = config("--ray", "10.0.0.5:6379", "--workers", "4", "--worker-cpus", "2", "--ray-namespace", "studio").ray
    assert (cluster.address, cluster.workers, cluster.worker_cpus, cluster.namespace) == ("10.0.0.5:6379", 4, 2.0, "studio")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--ray", "--workers", "0"])


def test_ray_only_options_without_ray_are_refused(capsys):
    from graphflow.server import serve_from_args

    with pytest.raises(SystemExit) as exit_:
        serve_from_args(["--workers", "2"])
    assert exit_.value.code == 2
    assert "--workers, --worker-cpus and --ray-namespace apply only with --ray" in capsys.readouterr().err


def test_ray_without_ray_installed_is_a_clear_error_and_frees_the_data_dir(tmp_path, monkeypatch, toy_registry):
    from graphflow.server import ServerConfig, create_app
    from graphflow.server.ray_pool import RayOptions

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError, as where the extra is missing
    with pytest.raises(RuntimeError, match=r"^--ray needs Ray, which is an optional extra: pip install 'graphflow\[ray\]'"):
        create_app(ServerConfig(data_dir=tmp_path / "d", ray=RayOptions()), toy_registry)
    create_app(ServerConfig(data_dir=tmp_path / "d"), toy_registry)  # the failed start left no lock behind


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", [["server.py"], ["-m", "graphflow", "serve"]])
def test_the_entry_points_serve_and_stop_on_ctrl_c(tmp_path, command):
    port = free_port()
    env = {**os.environ, "GRAPHFLOW_NODES": "tests.engine.toynodes", "GRAPHFLOW_TOKEN": ""}
    process = subprocess.Popen([sys.executable, *command, "--port", str(port), "--data-dir", str(tmp_path / "d")],
                               cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        health = None
        for _ in range(200):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
                    health = json.load(response)
                break
            except OSError:
                if process.poll() is not None:
                    break
                time.sleep(0.1)
        assert health == {"status": "ok", "queue": 0, "running": None}, process.stderr.read() if process.poll() is not None else ""
        assert (tmp_path / "d" / "jobs.sqlite").exists() and (tmp_path / "d" / "uploads").is_dir()
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    assert f"http://127.0.0.1:{port}" in stderr and "Traceback" not in stderr


def start_cli(tmp_path, *args: str, **popen):
    env = {**os.environ, "GRAPHFLOW_NODES": "tests.engine.toynodes", "GRAPHFLOW_TOKEN": "", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, *args, "--data-dir", str(tmp_path / "d")], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("options, words", [
    (["--port", "99999"], ["--port", "0 to 65535", "99999"]),
    (["--port", "http"], ["--port", "0 to 65535"]),
    (["--host", "256.1.1.1"], ["cannot listen on 256.1.1.1:8188"]),
    (["--port", "IN_USE"], ["cannot listen on 127.0.0.1:", "in use"]),
])
def test_a_port_or_host_it_cannot_listen_on_exits_2_in_one_line(tmp_path, options, words):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        options = [port if option == "IN_USE" else option for option in options]
        words = [word.replace("IN_USE", port) for word in words]
        process = start_cli(tmp_path, "server.py", *options)
        _, stderr = process.communicate(timeout=100)
    assert process.returncode == 2, stderr
    assert "Traceback" not in stderr and "graphflow server on" not in stderr
    for word in words:
        assert word in stderr.strip().splitlines()[-1], stderr


@pytest.mark.timeout(120)
@pytest.mark.parametrize("delay", [0.0, 0.3])
def test_ctrl_c_while_server_py_imports_exits_130_without_a_traceback(tmp_path, delay):
    process = start_cli(tmp_path, "-X", "importtime", "server.py", "--port", str(free_port()))
    try:
        for line in process.stderr:
            if line.rstrip().endswith("| graphflow.cli"):
                break
        time.sleep(delay)
        assert process.poll() is None
        process.send_signal(signal.SIGINT)
        rest = process.stderr.read()
        process.wait(60)
    finally:
        process.kill()
    messages = [line for line in rest.splitlines() if line.strip() and not line.startswith("import time:")]
    assert "Traceback" not in rest and "KeyboardInterrupt" not in rest
    if messages[:1] and messages[0].startswith("graphflow server on"):
        # a quiet machine finished importing within the delay: Ctrl-C then stops a serving server, cleanly
        assert process.returncode == 0, rest[-3000:]
    else:
        assert process.returncode == 130, rest[-3000:]
        assert messages == ["cancelled"]
