"""What the shipped-workflow tests share: one Engine for the session, and each workflow run once as shipped.

Settings as ``graphflow run workflows/X.json`` has them: empty models and input folders, ``workflows/assets``
as the read-only asset folder (the picture, the mask, the LoRAs, embeddings and the upscaler come from there),
a temporary output folder. ``shipped.report(name)`` runs a workflow the first time it is asked for and hands
every later caller the same report, so the tests that read one workflow's image share a single run.
"""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from graphflow import Engine, Settings

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "workflows"
ASSETS = WORKFLOWS / "assets"


class ShippedRuns:
    def __init__(self, engine: Engine):
        self.engine = engine
        self._reports: dict[str, object] = {}

    def report(self, name: str):
        if name not in self._reports:
            self._reports[name] = self.engine.run(WORKFLOWS / name)
        return self._reports[name]

    def saved(self, name: str, node: str | None = None) -> list[Path]:
        """The files the workflow's output node (or every output node) wrote."""
        outputs = self.report(name).outputs
        nodes = [node] if node else list(outputs)
        return [self.engine.settings.output_dir / image["filename"] for n in nodes for image in outputs[n].get("images", [])]

    def picture(self, name: str, node: str | None = None) -> np.ndarray:
        """The one PNG the workflow saved, as an H×W×3 uint8 array."""
        (path,) = [p for p in self.saved(name, node) if p.suffix == ".png"]
        with PILImage.open(path) as png:
            assert png.format == "PNG"
            return np.asarray(png.convert("RGB"))


@pytest.fixture(scope="session")
def shipped(tmp_path_factory) -> ShippedRuns:
    root = tmp_path_factory.mktemp("shipped")
    settings = Settings(models_dir=root / "models", input_dir=root / "inputs", output_dir=root / "outputs",
                        asset_dirs=(ASSETS,))
    return ShippedRuns(Engine(settings=settings, check_mutations=True))


def asset(name: str) -> np.ndarray:
    with PILImage.open(ASSETS / name) as picture:
        return np.asarray(picture.convert("RGB"))
