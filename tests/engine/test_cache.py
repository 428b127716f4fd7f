"""ResultCache's value pool: a byte-bounded LRU whose put and get cost does not grow with the entries it holds.

The cost is pinned down by counting, not timing: how many entries' sizes a put reads (timings belong in bench/)."""
import pytest

from graphflow import cache as cache_module
from graphflow.cache import ResultCache


class Blob:
    """A value that states its size; ``blob(n)`` is an outputs tuple of exactly ``n`` bytes."""

    def __init__(self, nbytes: int):
        self.nbytes = nbytes


def blob(nbytes: int) -> tuple:
    return (Blob(nbytes - TUPLE_BYTES),)


TUPLE_BYTES = cache_module.sizeof((Blob(0),))


@pytest.fixture
def size_reads(monkeypatch):
    """Counts every read of a cache entry's ``nbytes`` (the work a put does over the entries it holds)."""
    reads = [0]

    class CountedEntry(cache_module._Entry):
        def __getattribute__(self, name):
            if name == "nbytes":
                reads[0] += 1
            return super().__getattribute__(name)

    monkeypatch.setattr(cache_module, "_Entry", CountedEntry)
    return reads


def test_a_put_reads_no_other_entrys_size(size_reads):
    cache = ResultCache(value_budget=10**9)
    for index in range(1000):
        cache.put(f"k{index}", blob(100))
    size_reads[0] = 0
    cache.put("one-more", blob(100))
    assert cache.get("k0") is not None and cache.value_bytes == 1001 * 100
    assert size_reads[0] == 0


def test_eviction_reads_only_the_entries_it_evicts(size_reads):
    cache = ResultCache(value_budget=1000 * 100)
    for index in range(1000):
        cache.put(f"k{index}", blob(100))
    size_reads[0] = 0
    cache.put("big", blob(350))  # needs the room of four of the oldest entries
    assert size_reads[0] <= 4 + 1
    assert [f"k{i}" in cache for i in range(5)] == [False, False, False, False, True]
    assert cache.value_bytes == 996 * 100 + 350


def test_the_running_total_stays_the_sum_of_the_entries():
    cache = ResultCache(value_budget=1000)
    cache.put("a", blob(300))
    cache.put("b", blob(300))
    cache.put("a", blob(100))  # replaced: its old size leaves the total
    assert cache.value_bytes == 400
    cache.put("c", blob(5000))  # larger than the budget: not kept, and the total is unchanged
    assert "c" not in cache and cache.value_bytes == 400
    cache.put("b", blob(5000))  # a replacement larger than the budget drops the old entry too
    assert "b" not in cache and cache.value_bytes == 100
    cache.put("d", blob(950))  # evicts "a"
    assert "a" not in cache and cache.value_bytes == 950
    cache.clear()
    assert cache.value_bytes == 0 and cache.stats()["value_bytes"] == 0
