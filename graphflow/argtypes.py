"""Command-line argument types shared by ``graphflow`` and ``server.py``: one parse, one wording."""
from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """A whole number of at least 1 (``--repeat``, ``--workers``); argparse turns the error into one line."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, not {text!r}")
    return value
