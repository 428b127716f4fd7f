"""Write the tiny test assets (LoRAs, textual-inversion embeddings) for the built-in tiny-sd model.

    python scripts/make_assets.py [--models-dir DIR]

DIR defaults to $GRAPHFLOW_MODELS_DIR, else ./models. Files already there are kept. Writes
loras/tiny-lora-a.safetensors, loras/tiny-lora-b.safetensors (Kohya layout), embeddings/tinyneg.pt
(A1111 .pt) and embeddings/tinystyle.safetensors; the example workflows lora.json / long_prompt.json use them.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from nodes.tiny_assets import ensure_assets  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=Path(os.environ.get("GRAPHFLOW_MODELS_DIR", "models")))
    args = parser.parse_args()
    for name, path in ensure_assets(args.models_dir).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
