"""graphflow.cache.walk: the one walk over values, and the cache's sizes and mutation digests built on it."""
import sys
from dataclasses import dataclass

from graphflow.cache import digest, is_container, sizeof, walk


@dataclass
class Pair:
    left: object
    right: object


class Weights:
    """A stand-in for a socket value: it knows its own size and digest."""

    def __init__(self, nbytes: int, tag: str):
        self.nbytes, self.tag = nbytes, tag

    def __graphflow_digest__(self) -> str:
        return self.tag


def test_walk_visits_every_part_with_its_path_depth_first():
    value = {"b": [1, (2, 3)], "a": Pair("x", {4})}
    assert list(walk(value)) == [
        ("", value),
        ("['a']", value["a"]), ("['a'].left", "x"), ("['a'].right", {4}), ("['a'].right[0]", 4),
        ("['b']", [1, (2, 3)]), ("['b'][0]", 1), ("['b'][1]", (2, 3)), ("['b'][1][0]", 2), ("['b'][1][1]", 3),
    ]


def test_walk_does_not_look_inside_leaves():
    inner = [1, 2]
    assert list(walk([inner, 3], is_leaf=lambda part: part is inner)) == [("", [inner, 3]), ("[0]", inner), ("[1]", 3)]
    assert not is_container(Pair) and is_container(Pair(1, 2)) and not is_container("text")


def test_sizeof_takes_each_parts_own_nbytes_and_estimates_the_rest():
    assert sizeof(Weights(1000, "w")) == 1000
    assert sizeof([Weights(1000, "w"), Weights(24, "v")]) == sys.getsizeof([None, None]) + 1024
    assert sizeof(Pair(Weights(10, "w"), "ab")) == 10 + sys.getsizeof("ab")  # a dataclass counts only its fields


def test_digest_sees_contents_structure_and_own_digests():
    assert digest([1, {"a": 2}]) == digest([1, {"a": 2}])
    assert digest([1, {"a": 2}]) != digest([1, {"a": 3}])
    assert digest([1, 2]) != digest([[1], 2]) != digest((1, 2))  # where a value sits counts, not just the values
    assert digest([Weights(1, "same")]) == digest([Weights(999, "same")])  # an own digest is taken as it is
    assert digest([Weights(1, "before")]) != digest([Weights(1, "after")])
    assert digest(Pair([1], "x")) != digest(Pair([1, 0], "x"))  # a list grown in place changes the digest
