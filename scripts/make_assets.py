"""Write the example LoRAs and textual-inversion embeddings for a checkpoint's layer shapes.

    python scripts/make_assets.py [--checkpoint NAME] [--out DIR] [--models-dir DIR]

NAME (default tiny-sd) is loaded as LoadCheckpoint loads it: a built-in name, or a file / diffusers folder
in the models directory (--models-dir, default $GRAPHFLOW_MODELS_DIR, else ./models). DIR defaults to
workflows/assets, the asset folder the example workflows lora.json and long_prompt.json read from.
Writes (replacing what is there; the bytes depend only on the checkpoint's weights):
loras/tiny-lora-a.safetensors, loras/tiny-lora-b.safetensors (Kohya layout), embeddings/tinyneg.pt (A1111
.pt) and embeddings/tinystyle.safetensors. Run it again after changing the checkpoint the workflows use.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # loading never reaches for the network

from graphflow.context import CancelToken, RunContext, Settings  # noqa: E402
from graphflow.errors import NodeInputError  # noqa: E402
from nodes.loaders import LoadCheckpoint  # noqa: E402
from nodes.tiny_assets import write_assets  # noqa: E402


def load_checkpoint(name: str, models_dir: Path):
    """(unet, text_encoder) of a checkpoint, on the CPU in float32, through the LoadCheckpoint node."""
    settings = Settings(models_dir=models_dir)
    ctx = RunContext("make_assets", "ckpt", "LoadCheckpoint", settings, lambda event: None, CancelToken())
    model, clip, _ = LoadCheckpoint(name, dtype="float32", device="cpu", ctx=ctx)
    return model.unet, clip.text_encoder


def make_assets(checkpoint: str = "tiny-sd", out: Path = REPO / "workflows" / "assets",
                models_dir: Path = Path("models")) -> dict[str, Path]:
    unet, text_encoder = load_checkpoint(checkpoint, models_dir)
    return write_assets(out, unet, text_encoder)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="tiny-sd", help="checkpoint whose layer shapes the files fit")
    parser.add_argument("--out", type=Path, default=REPO / "workflows" / "assets", help="asset folder to write into")
    parser.add_argument("--models-dir", type=Path, default=Path(os.environ.get("GRAPHFLOW_MODELS_DIR", "models")))
    args = parser.parse_args(argv)
    try:
        paths = make_assets(args.checkpoint, args.out, args.models_dir)
    except NodeInputError as error:
        parser.exit(2, f"make_assets: {error}\n")
    for name, path in paths.items():
        print(f"{name}: {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
