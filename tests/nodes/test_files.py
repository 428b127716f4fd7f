"""nodes.files: names from workflows stay inside their folder; outputs are numbered, atomic, never overwritten."""
import os

import pytest

from graphflow.errors import NodeInputError
from nodes.files import atomic_write, relative_name, resolve_inside, unique_output_path, write_new_output


def test_resolve_inside_accepts_names_and_subfolders(tmp_path):
    assert resolve_inside(tmp_path, "a.png", "name") == (tmp_path / "a.png").resolve()
    assert resolve_inside(tmp_path, "sub/dir/a.png", "name") == (tmp_path / "sub/dir/a.png").resolve()


@pytest.mark.parametrize("name", ["../secret.txt", "sub/../../secret.txt", "..\\secret.txt", ".."])
def test_resolve_inside_rejects_parent_components(tmp_path, name):
    with pytest.raises(NodeInputError) as info:
        resolve_inside(tmp_path / "root", name, "name")
    assert info.value.input == "name" and "'..'" in info.value.message
    assert info.value.received == name


@pytest.mark.parametrize("name", ["/etc/passwd", "C:\\Windows\\win.ini", "C:relative", "\\\\server\\share\\x"])
def test_resolve_inside_rejects_absolute_paths(tmp_path, name):
    with pytest.raises(NodeInputError, match="absolute") as info:
        resolve_inside(tmp_path, name, "image")
    assert info.value.input == "image"


@pytest.mark.parametrize("name", ["", "   ", "a\x00b"])
def test_resolve_inside_rejects_empty_names(tmp_path, name):
    with pytest.raises(NodeInputError):
        resolve_inside(tmp_path, name, "name")


def test_resolve_inside_rejects_symlinks_leading_out(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir(), outside.mkdir()
    (outside / "secret.txt").write_text("x")
    (root / "link.txt").symlink_to(outside / "secret.txt")
    (root / "linkdir").symlink_to(outside, target_is_directory=True)
    for name in ("link.txt", "linkdir/secret.txt"):
        with pytest.raises(NodeInputError, match="symlink"):
            resolve_inside(root, name, "name")


def test_resolve_inside_allows_symlinks_within_the_root(tmp_path):
    (tmp_path / "real.txt").write_text("x")
    (tmp_path / "alias.txt").symlink_to(tmp_path / "real.txt")
    assert resolve_inside(tmp_path, "alias.txt", "name") == (tmp_path / "real.txt").resolve()


def test_unique_output_path_counts_up_from_the_highest_number(tmp_path):
    assert unique_output_path(tmp_path, "img", "png").name == "img_00001.png"
    (tmp_path / "img_00001.png").write_bytes(b"")
    (tmp_path / "img_00007.gif").write_bytes(b"")  # numbers are shared across extensions
    (tmp_path / "img2_00050.png").write_bytes(b"")  # another prefix does not count
    assert unique_output_path(tmp_path, "img", "png").name == "img_00008.png"


def test_unique_output_path_creates_subfolders_but_not_outside(tmp_path):
    path = unique_output_path(tmp_path / "out", "anims/run", "gif")
    assert path == (tmp_path / "out" / "anims" / "run_00001.gif").resolve() and path.parent.is_dir()
    for prefix in ("../escape", "/tmp/abs", ".", "sub/"):
        with pytest.raises(NodeInputError) as info:
            unique_output_path(tmp_path / "out", prefix, "png")
        assert info.value.input == "filename_prefix"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_write_never_replaces_an_existing_file(tmp_path):
    target = tmp_path / "x.bin"
    atomic_write(target, lambda f: f.write(b"first"))
    with pytest.raises(FileExistsError):
        atomic_write(target, lambda f: f.write(b"second"))
    assert target.read_bytes() == b"first"
    assert os.listdir(tmp_path) == ["x.bin"]  # no temporary file left behind


def test_atomic_write_leaves_nothing_when_the_writer_fails(tmp_path):
    def broken(file):
        file.write(b"partial")
        raise ValueError("encoder crashed")

    with pytest.raises(ValueError):
        atomic_write(tmp_path / "x.bin", broken)
    assert os.listdir(tmp_path) == []


def test_write_new_output_takes_the_next_number_when_the_chosen_one_is_taken(tmp_path, monkeypatch):
    import nodes.files as files

    real = files.unique_output_path
    calls = []

    def racing(directory, prefix, ext):  # another writer grabs the first name we pick
        path = real(directory, prefix, ext)
        if not calls:
            path.write_bytes(b"theirs")
        calls.append(path.name)
        return path

    monkeypatch.setattr(files, "unique_output_path", racing)
    path = write_new_output(tmp_path, "img", "png", lambda f: f.write(b"ours"))
    assert calls == ["img_00001.png", "img_00002.png"]
    assert path.name == "img_00002.png" and path.read_bytes() == b"ours"
    assert (tmp_path / "img_00001.png").read_bytes() == b"theirs"
    assert relative_name(path, tmp_path) == "img_00002.png"


def test_atomic_write_without_hard_links_still_refuses_to_overwrite(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise PermissionError("hard links not supported here")

    monkeypatch.setattr(os, "link", no_links)
    target = tmp_path / "x.bin"
    atomic_write(target, lambda f: f.write(b"first"))
    assert target.read_bytes() == b"first"
    with pytest.raises(FileExistsError):
        atomic_write(target, lambda f: f.write(b"second"))
    assert target.read_bytes() == b"first" and os.listdir(tmp_path) == ["x.bin"]


def test_every_node_side_lookup_refuses_a_symlink_out_of_its_folder(tmp_path):
    """Names from a workflow reach files through search.find_file (images, LoRAs, upscalers), embeddings,
    unique_output_path and the model loaders: all use the one resolve_inside, symlink check included."""
    from nodes.embeddings import find_embedding
    from nodes.loaders import checkpoint_dirs, resolve
    from nodes.search import find_file

    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir(), outside.mkdir()
    (outside / "secret.pt").write_bytes(b"x")
    (root / "secret.pt").symlink_to(outside / "secret.pt")
    (root / "linkdir").symlink_to(outside, target_is_directory=True)
    refusals = [
        lambda: find_file([root], ["secret.pt"], "image"),
        lambda: find_embedding([root], "secret"),
        lambda: unique_output_path(root, "linkdir/render", "png"),
        lambda: resolve("secret.pt", checkpoint_dirs(root), (".safetensors",), lambda path: False),
    ]
    for refused in refusals:
        with pytest.raises(NodeInputError, match="symlink"):
            refused()
    assert sorted(p.name for p in outside.iterdir()) == ["secret.pt"]  # nothing was written through the link


def test_new_output_moves_on_when_the_create_function_finds_the_name_taken(tmp_path):
    from nodes.files import new_output

    tried = []

    def create(path):
        tried.append(path.name)
        if len(tried) == 1:  # another writer claims this number between our choosing it and writing
            path.write_bytes(b"theirs")
        return atomic_write(path, lambda file: file.write(b"ours"))

    path = new_output(tmp_path, "ckpt", "bin", create)
    assert tried == ["ckpt_00001.bin", "ckpt_00002.bin"] and path.read_bytes() == b"ours"
    assert (tmp_path / "ckpt_00001.bin").read_bytes() == b"theirs"
