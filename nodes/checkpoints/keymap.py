"""Key renaming driven by tables: each rule is (diffusers prefix, original prefix, suffix renames).

A table is read in either direction, so a reader and a writer built on the same table cannot drift apart.
The tables themselves live with the layout they describe (``unet.py``, ``vae.py``, ``text.py``)."""
from __future__ import annotations

from typing import Iterable

import torch

Rule = tuple[str, str, dict[str, str]]


def swap_prefix(name: str, pairs: Iterable[tuple[str, str]]) -> str:
    """``name`` with the first matching ``old`` prefix of ``pairs`` (old, new) replaced by ``new``."""
    for old, new in pairs:
        if name.startswith(old):
            return new + name[len(old):]
    return name


def rename(key: str, rules: list[Rule], to_original: bool) -> str:
    """Translate one key with the first rule whose prefix matches; keys no rule covers keep their name
    (so a strict load reports them by the name they have in the file)."""
    for diffusers_prefix, original_prefix, suffixes in rules:
        source, target = (diffusers_prefix, original_prefix) if to_original else (original_prefix, diffusers_prefix)
        if key.startswith(source):
            pairs = suffixes.items() if to_original else [(o, d) for d, o in suffixes.items()]
            return target + swap_prefix(key[len(source):], pairs)
    return key


def rename_all(weights: dict[str, torch.Tensor], rules: list[Rule], to_original: bool) -> dict[str, torch.Tensor]:
    return {rename(k, rules, to_original): v for k, v in weights.items()}
