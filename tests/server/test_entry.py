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
