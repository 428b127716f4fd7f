"""Files a remote worker sends back land in the server's outputs folder without overwriting anything (no Ray
needed: this is the server's side of the transfer)."""
from graphflow.outputs import OutputFile
from graphflow.server.ray_pool import referenced_uploads, store_files


def test_a_workers_file_keeps_its_name_or_continues_the_folders_counter(tmp_path):
    (tmp_path / "txt2img_00001.png").write_bytes(b"old")
    (tmp_path / "txt2img_00007.png").write_bytes(b"old")
    (tmp_path / "grid.png").write_bytes(b"old")
    files = {"save": [(OutputFile("image", "txt2img_00001.png", {"width": 8}), b"new"),
                      (OutputFile("image", "fresh_00001.png"), b"own")],
             "grid": [(OutputFile("image", "grid.png"), b"g2"), (OutputFile("image", "grid.png"), b"g3")]}
    stored = store_files(tmp_path, files)
    assert [f.filename for f in stored["save"]] == ["txt2img_00008.png", "fresh_00001.png"]
    assert stored["save"][0].info == {"width": 8}
    assert [f.filename for f in stored["grid"]] == ["grid-2.png", "grid-3.png"]
    assert (tmp_path / "txt2img_00001.png").read_bytes() == b"old"  # nothing is overwritten
    assert [(tmp_path / n).read_bytes() for n in ("txt2img_00008.png", "grid-2.png", "grid-3.png")] == [b"new", b"g2", b"g3"]


def test_the_uploads_a_workflow_names_travel_with_it_and_nothing_else(tmp_path):
    (tmp_path / "photo.png").write_bytes(b"png")
    (tmp_path / "other.png").write_bytes(b"unused")
    workflow = {"graphflow": 1, "nodes": {
        "image": {"type": "LoadImage", "inputs": {"name": "photo.png", "mode": "RGB"}},
        "escape": {"type": "LoadImage", "inputs": {"name": "../secret.txt"}},
        "missing": {"type": "LoadImage", "inputs": {"name": "nope.png", "steps": 3}}}}
    (tmp_path.parent / "secret.txt").write_text("no")
    assert referenced_uploads(workflow, [tmp_path]) == {"photo.png": b"png"}


def test_files_from_the_servers_asset_folders_travel_too_uploads_first(tmp_path):
    uploads, assets = tmp_path / "uploads", tmp_path / "assets"
    uploads.mkdir(), assets.mkdir()
    (uploads / "photo.png").write_bytes(b"uploaded")
    (assets / "photo.png").write_bytes(b"shipped")
    (assets / "outline.png").write_bytes(b"outline")
    workflow = {"graphflow": 1, "nodes": {
        "a": {"type": "LoadImage", "inputs": {"name": "photo.png"}},
        "b": {"type": "LoadImage", "inputs": {"name": "outline.png"}}}}
    assert referenced_uploads(workflow, [uploads, assets]) == {"photo.png": b"uploaded", "outline.png": b"outline"}
