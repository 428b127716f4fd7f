"""graphflow.paths: a server's folders never reach a client (hide_folders); the one atomic write, whose files and
folders get the modes any new file or folder gets; the one resolve_inside."""
import os
import stat
from pathlib import Path

import pytest

from graphflow.paths import UnsafePath, atomic_folder, atomic_save, atomic_write, hide_folders, resolve_inside


def test_folders_are_replaced_by_their_labels_everywhere_in_a_json_value(tmp_path):
    inputs, assets = tmp_path / "data" / "inputs", tmp_path / "data" / "inputs" / "shipped"
    error = {"message": f"no such file in the input folders ({inputs.resolve()}, {assets})",
             "expected": [f"{inputs}/a.png", "b.png"], "received": 3, "node": None}
    hidden = hide_folders(error, {"<inputs>": inputs, "<assets>": assets})
    # the nested folder wins over its parent, so it is not shown as "<inputs>/shipped"
    assert hidden == {"message": "no such file in the input folders (<inputs>, <assets>)",
                      "expected": ["<inputs>/a.png", "b.png"], "received": 3, "node": None}
    assert str(tmp_path) not in str(hidden)


def test_text_without_those_folders_is_unchanged():
    assert hide_folders("steps must be >= 1", {"<models>": Path("/srv/models")}) == "steps must be >= 1"


def test_a_relative_folder_hides_its_absolute_form_but_not_the_plain_word(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    text = f"models must be SD 1.x; looked in {tmp_path.resolve() / 'models'}"
    assert hide_folders(text, {"<models>": Path("models")}) == "models must be SD 1.x; looked in <models>"


# --------------------------------------------------------------------------------------------- atomic writes

@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def recreating_writer_at(path):
    """A library that writes a fresh file at the path it is given, private to its owner (as safetensors does)."""
    Path(path).unlink(missing_ok=True)
    descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.write(descriptor, b"bytes")
    os.close(descriptor)


def test_written_files_get_the_mode_of_any_new_file(tmp_path, umask):
    expected = 0o666 & ~umask  # 0644 under umask 022, 0600 under 077
    assert mode(atomic_write(tmp_path / "a.bin", lambda file: file.write(b"x"))) == expected
    assert mode(atomic_save(tmp_path / "b.bin", lambda path: path.write_bytes(b"x"))) == expected
    assert mode(atomic_save(tmp_path / "c.bin", recreating_writer_at)) == expected
    assert mode(atomic_save(tmp_path / "c.bin", recreating_writer_at, replace=True)) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.bin", "c.bin"]


def test_written_folders_get_the_mode_of_any_new_folder_inside_out(tmp_path, umask):
    def fill(staging):
        (staging / "config.json").write_text("{}")
        (staging / "unet").mkdir(mode=0o700)
        recreating_writer_at(staging / "unet" / "weights.safetensors")  # as safetensors writes them: 0600

    folder = atomic_folder(tmp_path / "model", fill)
    assert mode(folder) == mode(folder / "unet") == 0o777 & ~umask and (folder / "config.json").read_text() == "{}"
    assert mode(folder / "config.json") == mode(folder / "unet" / "weights.safetensors") == 0o666 & ~umask


def test_atomic_save_never_replaces_unless_asked(tmp_path):
    target = atomic_save(tmp_path / "x.bin", lambda path: path.write_bytes(b"first"))
    with pytest.raises(FileExistsError):
        atomic_save(target, lambda path: path.write_bytes(b"second"))
    assert target.read_bytes() == b"first"
    atomic_save(target, lambda path: path.write_bytes(b"rebuilt"), replace=True)
    assert target.read_bytes() == b"rebuilt" and os.listdir(tmp_path) == ["x.bin"]


def test_atomic_folder_refuses_an_existing_folder_and_leaves_nothing(tmp_path):
    atomic_folder(tmp_path / "model", lambda staging: (staging / "a").write_text("first"))
    with pytest.raises(FileExistsError):
        atomic_folder(tmp_path / "model", lambda staging: (staging / "a").write_text("second"))
    assert (tmp_path / "model" / "a").read_text() == "first" and os.listdir(tmp_path) == ["model"]


def test_a_failing_folder_writer_leaves_nothing(tmp_path):
    def broken(staging):
        (staging / "half").write_text("x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_folder(tmp_path / "model", broken)
    assert os.listdir(tmp_path) == []


def test_resolve_inside_refuses_a_symlink_that_leads_out(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir(), outside.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePath) as caught:
        resolve_inside(root, "link/file.bin")
    assert caught.value.via_symlink
