"""Write the face restoration example's random restorer and its picture into workflows/assets/ (same bytes each run).

    python scripts/make_face_assets.py

``facerestore_models/tiny-restoreformer.safetensors``: a RestoreFormer with random weights at test size
(nodes/faces/tiny.py); ``toy_face.png``: one toy face (training/toy_faces.py) at a fixed place on a fixed
background. The example's detector is trained, not written here: training/train_face_detector.py.
"""
from pathlib import Path

from nodes.faces.tiny import write_restorer_asset
from training.toy_faces import write_demo_picture

if __name__ == "__main__":
    assets = Path(__file__).resolve().parents[1] / "workflows" / "assets"
    print(write_restorer_asset(assets))
    print(write_demo_picture(assets))
