"""Path resolution for /outputs and storage of uploads, without a server."""
from __future__ import annotations

import re

import pytest

from graphflow.server.files import Rejected, decode_upload, served_file, store_image

from .toyimages import png_bytes


def test_served_file_finds_files_and_refuses_ways_out(tmp_path):
    root = tmp_path / "outputs"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.png").write_bytes(b"x")
    (tmp_path / "secret").write_text("s")
    (root / "out").symlink_to(tmp_path / "secret")
    (root / "in").symlink_to(root / "sub" / "a.png")
    assert served_file(root, "sub/a.png") == (root / "sub" / "a.png").resolve()
    assert served_file(root, "in") == (root / "sub" / "a.png").resolve()  # a symlink that stays inside is fine
    assert served_file(root, "out") is None
    assert served_file(root, "sub") is None  # a directory is not a file
    assert served_file(root, "missing.png") is None
    for name in ("../secret", "sub/../../secret", "/etc/passwd", "", "a\x00b", "..\\secret"):
        with pytest.raises(Rejected) as caught:
            served_file(root, name)
        assert caught.value.status == 400


def test_store_image_is_content_addressed_and_never_overwrites(tmp_path):
    first = store_image(png_bytes(3, 3, 1), tmp_path, max_pixels=100)
    path = tmp_path / first["name"]
    path.write_bytes(b"changed by someone")
    assert store_image(png_bytes(3, 3, 1), tmp_path, max_pixels=100) == first
    assert path.read_bytes() == b"changed by someone"
    assert [p.name for p in tmp_path.iterdir()] == [first["name"]]  # no temporary files left


def test_store_image_refuses_unsupported_formats(tmp_path):
    from PIL import Image
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="ICO")
    with pytest.raises(Rejected, match="unsupported image format ICO"):
        store_image(buffer.getvalue(), tmp_path, max_pixels=100)


def _refusal(data: bytes, max_pixels: int = 10_000) -> str:
    with pytest.raises(Rejected) as caught:
        decode_upload(data, max_pixels)
    assert caught.value.status == 400
    return caught.value.message


def test_a_bad_upload_is_told_what_is_wrong_with_it_never_an_object_address():
    from PIL import Image
    import io

    def saved(fmt: str, size=(8, 8)) -> bytes:
        buffer = io.BytesIO()
        Image.effect_noise(size, 50).convert("RGB").save(buffer, format=fmt)
        return buffer.getvalue()

    accepted = "expected one of PNG, JPEG, WEBP, BMP, GIF, TIFF"
    messages = {
        "empty": _refusal(b""),
        "text": _refusal(b"#!/bin/sh\necho hello\n"),
        "ico": _refusal(saved("ICO")),
        "truncated png": _refusal(saved("PNG")[:-30]),
        "truncated jpeg": _refusal(saved("JPEG", (64, 64))[:-200]),
        "too many pixels": _refusal(saved("PNG", (200, 100)), max_pixels=10_000),
    }
    assert messages == {
        "empty": "field 'image' is empty",
        "text": f"field 'image' is not an image in a format this server reads; {accepted}",
        "ico": f"unsupported image format ICO; {accepted}",
        "truncated png": "field 'image' is a truncated or corrupt PNG file: it does not decode completely",
        "truncated jpeg": "field 'image' is a truncated or corrupt JPEG file: it does not decode completely",
        "too many pixels": "image too large: 200x100 is 20000 pixels, the limit is 10000",
    }
    assert not any(re.search(r"0x[0-9a-f]{6}|BytesIO|Error", m) for m in messages.values())
