"""The Python client printed in the README's server section works against a real server."""
from __future__ import annotations

import re
from pathlib import Path

from PIL import Image

from .conftest import gray_workflow

DOC = Path(__file__).resolve().parents[2] / "README.md"


def server_section() -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index("## HTTP server")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def documented_client() -> dict:
    blocks = re.findall(r"```python\n(.*?)```", server_section(), flags=re.S)
    assert len(blocks) == 1, "the README's server section should show exactly one Python client"
    namespace = {"__name__": "documented_client"}
    exec(compile(blocks[0], str(DOC), "exec"), namespace)
    return namespace


async def test_the_documented_client_submits_follows_and_downloads(server, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GRAPHFLOW_TOKEN", raising=False)
    run_job = documented_client()["run_job"]
    job = await run_job(server.url, gray_workflow(width=12, height=6), str(tmp_path))
    assert job["status"] == "succeeded"
    [saved] = tmp_path.glob("*.png")
    with Image.open(saved) as image:
        assert image.size == (12, 6)
    assert f"saved {saved}" in capsys.readouterr().out


async def test_the_documented_client_sends_the_token(start_server, tmp_path, monkeypatch):
    server = start_server(token="t0k3n")
    monkeypatch.setenv("GRAPHFLOW_TOKEN", "t0k3n")
    job = await documented_client()["run_job"](server.url, gray_workflow(), str(tmp_path))
    assert job["status"] == "succeeded"
