"""A1111's prompt syntax as text: emphasis brackets, weights, escapes and ``BREAK`` (pure string work, no
tokenizer, no torch). :func:`parse_prompt_attention` turns ``a (red:1.2) [cat] BREAK sky`` into ``(text,
weight)`` runs, the first of the three stages in :mod:`nodes.prompt`."""
from __future__ import annotations

import re

ROUND_BRACKET = 1.1  # "(x)" multiplies by this, "[x]" divides by it (A1111's numbers)
BREAK_WEIGHT = -1.0
BREAK = ("BREAK", BREAK_WEIGHT)  # chunk marker in parse_prompt_attention's output, as in A1111


# One lexical unit of the emphasis syntax; tried in order at each position.
_LEXEME = re.compile(
    r"""
    (?P<escape>\\[()\[\]\\])              # \( \) \[ \] \\ : the character itself
    | (?P<backslash>\\)                   # any other backslash is dropped (A1111 does the same)
    | (?P<weight>:\s*(?P<number>[+-]?(?:\d+\.?\d*|\.\d+))\s*\))   # ":1.3)" closes a round bracket
    | (?P<open>[(\[])
    | (?P<close>[)\]])
    | (?P<text>[^\\()\[\]:]+|:)           # plain text; a colon not followed by a weight is text
    """,
    re.VERBOSE,
)
_BREAK_WORD = re.compile(r"\s*\bBREAK\b\s*")


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """Split a prompt into ``(text, weight)`` runs following A1111's emphasis rules.

    ``(x)`` ×1.1, ``((x))`` ×1.21, ``(x:1.3)`` ×1.3, ``[x]`` ÷1.1, nesting multiplies; ``\\(`` ``\\)`` ``\\[``
    ``\\]`` ``\\\\`` are literal characters. Brackets that are never closed weigh everything after them;
    closing brackets that were never opened are literal text. The word ``BREAK`` (upper case, on its own)
    becomes the marker :data:`BREAK`. Neighbouring runs with equal weights are merged; empty runs are
    dropped; the empty prompt gives ``[("", 1.0)]``.

    Differences from A1111: a weight that is not a number (``(x:1.2.3)``) is text (the bracket still
    closes with ×1.1) instead of an exception, and ``BREAK`` inside brackets still breaks (A1111 turns it into the literal word there)."""
    runs: list[list] = []  # [text, weight, is_break]; weights are multiplied in place as brackets close
    open_round: list[int] = []  # index into runs where each still-open bracket started
    open_square: list[int] = []

    def scale_from(start: int, factor: float) -> None:
        for run in runs[start:]:
            if not run[2]:
                run[1] *= factor

    for match in _LEXEME.finditer(text):
        kind = match.lastgroup if match.lastgroup != "number" else "weight"
        piece = match.group(0)
        if kind == "escape":
            runs.append([piece[1], 1.0, False])
        elif kind == "backslash":
            continue
        elif kind == "open":
            (open_round if piece == "(" else open_square).append(len(runs))
        elif kind == "weight" and open_round:
            scale_from(open_round.pop(), float(match.group("number")))
        elif kind == "close" and piece == ")" and open_round:
            scale_from(open_round.pop(), ROUND_BRACKET)
        elif kind == "close" and piece == "]" and open_square:
            scale_from(open_square.pop(), 1 / ROUND_BRACKET)
        else:  # text, or a closing bracket / weight with nothing open: literal
            for index, part in enumerate(_BREAK_WORD.split(piece)):
                if index:
                    runs.append(["BREAK", BREAK_WEIGHT, True])
                runs.append([part, 1.0, False])

    # Unclosed brackets weigh the rest of the prompt, innermost first (the order A1111 multiplies in).
    for start in reversed(open_round):
        scale_from(start, ROUND_BRACKET)
    for start in reversed(open_square):
        scale_from(start, 1 / ROUND_BRACKET)
    return _merge_runs(runs)


def _merge_runs(runs: list[list]) -> list[tuple[str, float]]:
    merged: list[tuple[str, float]] = []
    for text, weight, is_break in runs:
        if is_break:
            merged.append(BREAK)
        elif not text:
            continue
        elif merged and merged[-1] is not BREAK and merged[-1][1] == weight:
            merged[-1] = (merged[-1][0] + text, weight)
        else:
            merged.append((text, weight))
    return merged or [("", 1.0)]


def is_break(run: tuple[str, float]) -> bool:
    return run is BREAK or (run[0] == "BREAK" and run[1] == BREAK_WEIGHT)
