"""`python server.py` finds the shipped examples' files (input pictures, LoRAs, embeddings, upscalers) in
workflows/assets/, read-only and after the uploads and models, so every shipped workflow runs from the page or
the API as it is; --assets names other folders, --assets '' none."""
import asyncio
from contextlib import contextmanager
from pathlib import Path

import pytest

from graphflow.errors import WorkflowInvalid
from graphflow.server import build_parser, config_from_args
from graphflow.server.app import Server

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "workflows").glob("*.json"))


@contextmanager
def server_for(tmp_path, *argv):
    """A server as ``python server.py ARGV`` builds it (not listening: its engine is what matters here)."""
    config = config_from_args(build_parser().parse_args(["--data-dir", str(tmp_path / "data"),
                                                          "--models-dir", str(tmp_path / "models"), *argv]))
    server = Server(config)
    try:
        yield server
    finally:
        asyncio.run(server.cleanup(None))


def test_by_default_the_shipped_assets_are_a_read_only_asset_folder(tmp_path):
    with server_for(tmp_path) as server:
        assert server.engine.settings.asset_dirs == ((ROOT / "workflows" / "assets").resolve(),)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_workflow_finds_all_its_files_on_a_default_server(tmp_path, path):
    with server_for(tmp_path) as server:
        server.engine.validate(path)  # preflight: every named model, picture, LoRA, embedding and upscaler exists


def test_assets_option_chooses_the_folders_and_an_empty_name_none(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    with server_for(tmp_path, "--assets", str(mine)) as server:
        assert server.engine.settings.asset_dirs == (mine.resolve(),)
    with server_for(tmp_path, "--assets", "") as server:
        assert server.engine.settings.asset_dirs == ()
        with pytest.raises(WorkflowInvalid, match="input.png"):
            server.engine.validate(ROOT / "workflows" / "img2img.json")
