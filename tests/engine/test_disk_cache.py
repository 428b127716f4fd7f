"""The persistent disk cache: values that declared how they are stored survive the process (safetensors + JSON,
never pickle); bad, truncated or foreign files are removed and count as misses; the folder stays within its byte
bound by dropping the least recently used files. Engine-level, with a numpy value of the test's own."""
import os
from dataclasses import dataclass

import numpy as np
import pytest

from graphflow import Engine, Settings
from graphflow.cache import ResultCache
from graphflow.disk_cache import DiskCache, register_value
from graphflow.env import EnvironmentInvalid
from graphflow.node import Input, node, spec_of
from graphflow.registry import Registry

KEY_A, KEY_B, KEY_C = "a" * 64, "b" * 64, "c" * 64
CALLS = {"MakeBox": 0}


@dataclass(frozen=True)
class Box:
    array: np.ndarray
    label: str


class Unstored:
    pass


def box_to_disk(box: Box):
    return {"array": box.array}, {"label": box.label}


def box_from_disk(arrays, meta):
    if not isinstance(meta.get("label"), str):
        raise ValueError("label must be a string")
    return Box(arrays["array"], meta["label"])


register_value(Box, "test.box", box_to_disk, box_from_disk, arrays="numpy")


@node(outputs={"box": "BOX"}, category="test")
def MakeBox(size: int = 4, label: str = "x"):
    CALLS["MakeBox"] += 1
    return Box(np.arange(size, dtype=np.float32), label)


@node(outputs={"box": "BOX"}, category="test")
def Relabel(box=Input("BOX"), label: str = "y"):
    return Box(box.array, label)


@node(output=True, category="test")
def ShowBox(box=Input("BOX")) -> dict:
    return {"label": box.label}


def a_box(size: int = 4, label: str = "x") -> Box:
    return Box(np.arange(size, dtype=np.float32), label)


@pytest.fixture
def cache(tmp_path) -> DiskCache:
    return DiskCache(tmp_path / "disk", max_bytes=10**6)


def test_a_stored_value_comes_back_in_another_instance(cache, tmp_path):
    assert cache.put(KEY_A, (a_box(), a_box(2, "two")))
    again = DiskCache(tmp_path / "disk").get(KEY_A)
    assert [b.label for b in again] == ["x", "two"]
    np.testing.assert_array_equal(again[0].array, a_box().array)
    assert cache.path_of(KEY_A).read_bytes()[8:].lstrip().startswith(b"{")  # safetensors: JSON header, no pickle


def test_values_without_a_codec_are_not_stored(cache):
    assert not cache.put(KEY_A, (a_box(), Unstored()))
    assert not cache.path_of(KEY_A).exists()
    assert cache.get(KEY_A) is None


def test_a_truncated_file_is_a_miss_and_is_removed(cache):
    cache.put(KEY_A, (a_box(1000),))
    path = cache.path_of(KEY_A)
    path.write_bytes(path.read_bytes()[:-10])
    assert cache.get(KEY_A) is None
    assert not path.exists()
    assert "truncated" in cache.removed[0][1]


def test_a_file_of_another_key_is_a_miss_and_is_removed(cache):
    cache.put(KEY_A, (a_box(),))
    foreign = cache.path_of(KEY_B)
    foreign.parent.mkdir(parents=True, exist_ok=True)
    foreign.write_bytes(cache.path_of(KEY_A).read_bytes())  # renamed or copied: its content names key A
    assert cache.get(KEY_B) is None
    assert not foreign.exists()
    assert cache.get(KEY_A) is not None


@pytest.mark.parametrize("content", [b"", b"garbage", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}",
                                     b"\x02\x00\x00\x00\x00\x00\x00\x00{}"])
def test_garbage_files_are_misses_and_are_removed(cache, content):
    path = cache.path_of(KEY_A)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    assert cache.get(KEY_A) is None
    assert not path.exists()


def test_garbage_json_in_a_valid_safetensors_header_is_refused(cache):
    from safetensors.numpy import save

    path = cache.path_of(KEY_A)
    path.parent.mkdir(parents=True)
    path.write_bytes(save({"0.array": np.zeros(2, np.float32)}, metadata={"graphflow": "{not json"}))
    assert cache.get(KEY_A) is None
    assert not path.exists()


def test_meta_its_codec_refuses_is_a_miss_and_is_removed(cache):
    from safetensors.numpy import save

    description = f'{{"version": 1, "key": "{KEY_A}", "outputs": [{{"tag": "test.box", "meta": {{"label": 5}}}}]}}'
    path = cache.path_of(KEY_A)
    path.parent.mkdir(parents=True)
    path.write_bytes(save({"0.array": np.zeros(2, np.float32)}, metadata={"graphflow": description}))
    assert cache.get(KEY_A) is None
    assert not path.exists()
    assert "label must be a string" in cache.removed[0][1]


def test_a_file_of_an_unknown_value_type_is_skipped_but_kept(cache):
    from safetensors.numpy import save

    description = f'{{"version": 1, "key": "{KEY_A}", "outputs": [{{"tag": "another.pack", "meta": {{}}}}]}}'
    path = cache.path_of(KEY_A)
    path.parent.mkdir(parents=True)
    path.write_bytes(save({"0.x": np.zeros(2, np.float32)}, metadata={"graphflow": description}))
    assert cache.get(KEY_A) is None
    assert path.exists()


def test_a_second_writer_of_the_same_key_leaves_the_first_file(cache):
    assert cache.put(KEY_A, (a_box(label="first"),))
    assert cache.put(KEY_A, (a_box(label="second"),))
    assert cache.get(KEY_A)[0].label == "first"
    assert [p.name for p in cache.path_of(KEY_A).parent.iterdir()] == [KEY_A + ".safetensors"]  # no temp files


def test_the_least_recently_used_files_go_first_when_over_the_bound(cache):
    cache.put(KEY_A, (a_box(1000),))
    size = cache.path_of(KEY_A).stat().st_size
    cache.max_bytes = 2 * size
    cache.put(KEY_B, (a_box(1000, "b"),))
    os.utime(cache.path_of(KEY_A), (1000, 1000))
    os.utime(cache.path_of(KEY_B), (2000, 2000))
    assert cache.get(KEY_A) is not None  # a hit makes A the most recently used
    cache.put(KEY_C, (a_box(1000, "c"),))
    assert cache.path_of(KEY_A).exists() and cache.path_of(KEY_C).exists()
    assert not cache.path_of(KEY_B).exists()
    assert cache.total_bytes() <= cache.max_bytes


def test_a_bad_byte_bound_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("GRAPHFLOW_DISK_CACHE_BYTES", "lots")
    with pytest.raises(EnvironmentInvalid, match="GRAPHFLOW_DISK_CACHE_BYTES: expected a size in bytes.*'lots'"):
        DiskCache.from_env(tmp_path)


def test_the_disk_cache_is_off_unless_a_folder_is_named(monkeypatch, tmp_path):
    monkeypatch.delenv("GRAPHFLOW_DISK_CACHE", raising=False)
    assert DiskCache.from_env() is None
    monkeypatch.setenv("GRAPHFLOW_DISK_CACHE", str(tmp_path / "d"))
    monkeypatch.setenv("GRAPHFLOW_DISK_CACHE_BYTES", "1MiB")
    made = DiskCache.from_env()
    assert made.folder == tmp_path / "d" and made.max_bytes == 1024**2


def test_a_new_engine_takes_stored_outputs_from_disk(tmp_path):
    registry = Registry([spec_of(MakeBox), spec_of(Relabel), spec_of(ShowBox)])
    settings = Settings(models_dir=tmp_path, input_dir=tmp_path, output_dir=tmp_path)
    workflow = {"graphflow": 1, "nodes": {"make": {"type": "MakeBox", "inputs": {"size": 3}},
                                          "relabel": {"type": "Relabel", "inputs": {"box": {"from": "make", "output": "box"}}},
                                          "show": {"type": "ShowBox", "inputs": {"box": {"from": "relabel", "output": "box"}}}}}

    def fresh_engine() -> Engine:  # a new process, as far as the engine can tell: an empty memory cache
        return Engine(registry, settings, ResultCache(), disk_cache=DiskCache(tmp_path / "disk"))

    CALLS["MakeBox"] = 0
    first = fresh_engine().run(workflow)
    assert first.executed == ["make", "relabel", "show"] and CALLS["MakeBox"] == 1
    second = fresh_engine().run(workflow)
    assert second.cached == ["make", "relabel"] and CALLS["MakeBox"] == 1
    assert second.executed == ["show"]  # output nodes always run: what they write is not a stored value
    assert second.outputs["show"] == {"label": "y"}
    np.testing.assert_array_equal(second.values["make"]["box"].array, np.arange(3, dtype=np.float32))


@pytest.mark.parametrize("setting, message", [("bytes", "GRAPHFLOW_DISK_CACHE_BYTES: expected a size"),
                                              ("file", "disk cache")])
def test_the_cli_names_a_bad_disk_cache_setting_without_a_traceback(setting, message, tmp_path, monkeypatch, capsys):
    from graphflow import cli

    workflow = tmp_path / "w.json"
    workflow.write_text('{"graphflow": 1, "nodes": {}}')
    folder = tmp_path / "disk"
    if setting == "bytes":
        monkeypatch.setenv("GRAPHFLOW_DISK_CACHE_BYTES", "lots")
    else:
        folder.write_text("not a folder")
    assert cli.main(["run", str(workflow), "--disk-cache", str(folder)]) == cli.EXIT_INVALID
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
