"""ComfyUI's prompt weighting (its sd1_clip), over graphflow's tokenizer and text encoder functions.

It differs from A1111's (nodes/prompt_syntax.py) in three ways:

- syntax: only round brackets. ``(x)`` multiplies the weight by 1.1, ``(x:1.3)`` SETS it to 1.3 (nesting does
  not multiply into an explicit weight), ``[x]`` is plain text, ``\\(`` and ``\\)`` are literal brackets, there
  is no ``BREAK``;
- windows: each weighted piece of text is one group of tokens; a group of fewer than 8 tokens that does not
  fit the current 75-token window moves whole to the next one (the window is padded), a longer one is split;
- weights: a token of weight w becomes ``empty + (z - empty)·w``, where ``empty`` is the empty prompt encoded
  in the same batch at the same position — a pull away from (or towards) the empty prompt, with no
  renormalisation of the mean. Prompts whose weights are all 1 are encoded without the empty prompt.

``embedding:NAME`` puts textual-inversion vectors in place (after a space or a newline, or at the start of a
weighted piece; the name ends at the next whitespace; a trailing comma is tried without). Each vector takes the
weight of its piece.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import torch

from ..prompt import EMBEDDING_PREFIX, EmbeddingTable, encode_text, text_ids

ROUND_BRACKET = 1.1
MAX_WORD_LENGTH = 8  # token groups shorter than this are never split across windows
_ESCAPED_CLOSE, _ESCAPED_OPEN = "\0\1", "\0\2"


def _parentheses(text: str) -> list[str]:
    """Split at top-level round-bracket groups: "a (b (c)) d" -> ["a ", "(b (c))", " d"]."""
    pieces, current, depth = [], "", 0
    for char in text:
        if char == "(":
            if depth == 0:
                if current:
                    pieces.append(current)
                current = "("
            else:
                current += char
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                pieces.append(current + ")")
                current = ""
            else:
                current += char
        else:
            current += char
    if current:
        pieces.append(current)
    return pieces


def _weighted(text: str, weight: float) -> list[tuple[str, float]]:
    runs = []
    for piece in _parentheses(text):
        if len(piece) >= 2 and piece[0] == "(" and piece[-1] == ")":
            inner, inner_weight = piece[1:-1], weight * ROUND_BRACKET
            colon = inner.rfind(":")
            if colon > 0:
                try:
                    inner_weight = float(inner[colon + 1:])
                    inner = inner[:colon]
                except ValueError:
                    pass
            runs += _weighted(inner, inner_weight)
        else:
            runs.append((piece, weight))
    return runs


def parse_weights(text: str) -> list[tuple[str, float]]:
    """``(text, weight)`` pieces of a prompt, ComfyUI's syntax (see the module docstring)."""
    escaped = text.replace("\\)", _ESCAPED_CLOSE).replace("\\(", _ESCAPED_OPEN)
    return [(piece.replace(_ESCAPED_CLOSE, ")").replace(_ESCAPED_OPEN, "("), weight) for piece, weight in _weighted(escaped, 1.0)]


EmbeddingFinder = Callable[[str], "torch.Tensor | None"]


@dataclass(frozen=True)
class WeightedTokens:
    """Windows of 77 token ids (k, 77) and weights, negative ids marking rows of ``embedding_vectors``."""

    input_ids: "torch.Tensor"
    weights: "torch.Tensor"
    embedding_vectors: "torch.Tensor | None"


class MissingEmbedding(LookupError):
    pass


def _groups(tokenizer, text: str, find_embedding: EmbeddingFinder, table: EmbeddingTable, check=None):
    """The token groups of a prompt: [(ids, weight)], one per piece of text and one per embedding."""
    groups = []
    for piece, weight in parse_weights(text):
        if check is not None:
            check()
        words = re.split(f" {EMBEDDING_PREFIX}|\n{EMBEDDING_PREFIX}", piece)
        words = [words[0]] + [EMBEDDING_PREFIX + w for w in words[1:]]
        for word in (w for w in words if w != ""):
            if word.startswith(EMBEDDING_PREFIX):
                word = _embedding_group(word[len(EMBEDDING_PREFIX):].strip("\n"), weight, find_embedding, table, groups)
                if not word:
                    continue
            groups.append((text_ids(tokenizer, word), weight))
    return groups


def _embedding_group(name_and_rest: str, weight: float, find_embedding: EmbeddingFinder, table: EmbeddingTable,
                     groups: list) -> str:
    """Add an embedding's vectors as a group; return the text after its name."""
    parts = name_and_rest.split()
    name, rest = (parts[0], " ".join(parts[1:])) if parts else ("", "")
    vectors = find_embedding(name) if name else None
    if vectors is None and name.strip(",") != name and name.strip(","):
        stripped = name.strip(",")
        vectors = find_embedding(stripped)
        rest = f"{name[len(stripped):]} {rest}"
        name = stripped
    if vectors is None:
        raise MissingEmbedding(name)
    vectors = vectors if vectors.ndim == 2 else vectors.reshape(1, -1)
    groups.append((list(table.slot_ids(name, vectors)), weight))
    return rest


def tokenize_weighted(tokenizer, text: str, find_embedding: EmbeddingFinder, check=None) -> WeightedTokens:
    """ComfyUI's tokenize_with_weights: windows of BOS + 75 + EOS, padded with the tokenizer's pad token.
    ``check`` (a node's ``ctx.check_cancelled``) is called between pieces, so a huge prompt can be cancelled."""
    window = int(tokenizer.model_max_length)
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    table = EmbeddingTable()
    windows: list[list[tuple[int, float]]] = []
    current: list[tuple[int, float]] = [(bos, 1.0)]
    windows.append(current)
    for ids, weight in _groups(tokenizer, text, find_embedding, table, check):
        group = [(t, weight) for t in ids]
        large = len(group) >= MAX_WORD_LENGTH
        while group:
            if len(group) + len(current) > window - 1:
                room = window - len(current) - 1
                if large:  # split the group: fill this window, carry the rest
                    current.extend(group[:room])
                    current.append((eos, 1.0))
                    group = group[room:]
                else:  # move the whole group to a new window
                    current.append((eos, 1.0))
                    current.extend([(pad, 1.0)] * room)
                current = [(bos, 1.0)]
                windows.append(current)
            else:
                current.extend(group)
                group = []
    current.append((eos, 1.0))
    current.extend([(pad, 1.0)] * (window - len(current)))
    return WeightedTokens(
        input_ids=torch.tensor([[t for t, _ in w] for w in windows], dtype=torch.long),
        weights=torch.tensor([[w for _, w in win] for win in windows], dtype=torch.float32),
        embedding_vectors=table.vectors(),
    )


def empty_window(tokenizer) -> list[int]:
    """ComfyUI's gen_empty_tokens: BOS, EOS, then padding."""
    window = int(tokenizer.model_max_length)
    return [tokenizer.bos_token_id, tokenizer.eos_token_id] + [tokenizer.pad_token_id] * (window - 2)


def encode_weighted(tokenizer, text_encoder, tokens: WeightedTokens, clip_skip: int = 1,
                    penultimate: bool = False) -> "torch.Tensor":
    """Embeddings (1, 77k, C): all windows in one batch (with the empty prompt after them when any weight is not
    1), each weighted token pulled from the empty prompt's embedding at its position by its weight."""
    return encode_weighted_pooled(tokenizer, text_encoder, tokens, clip_skip, penultimate, pooled=False)[0]


def encode_weighted_pooled(tokenizer, text_encoder, tokens: WeightedTokens, clip_skip: int = 1,
                           penultimate: bool = False, pooled: bool = True) -> "tuple[torch.Tensor, torch.Tensor | None]":
    """:func:`encode_weighted` and, with ``pooled``, the projected pooled embedding (1, P) of the first window,
    unweighted, as ComfyUI takes it. ``penultimate``: the layer read without the final norm (SDXL's encoders)."""
    ids = tokens.input_ids
    weighted = bool((tokens.weights != 1.0).any())
    if weighted:
        ids = torch.cat([ids, torch.tensor([empty_window(tokenizer)], dtype=torch.long)])
    out, pooled_rows = encode_text(text_encoder, ids, None, clip_skip, "none", tokens.embedding_vectors,
                                   penultimate=penultimate, pooled=pooled)
    out = out.float()
    windows = out[:tokens.input_ids.shape[0]]
    if weighted:
        empty = out[-1:]
        w = tokens.weights.to(out.device).unsqueeze(-1)
        windows = torch.where(w != 1.0, (windows - empty) * w + empty, windows)
    first_pooled = None if pooled_rows is None else pooled_rows[:1].float()
    return windows.reshape(1, -1, windows.shape[-1]), first_pooled
