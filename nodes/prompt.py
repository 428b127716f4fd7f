"""A1111-style prompts: emphasis syntax, prompts longer than 77 tokens, textual-inversion words.

Three pure stages that ``Tokenize`` / ``CLIPTextEncode`` call:

1. :func:`~nodes.prompt_syntax.parse_prompt_attention` (in ``prompt_syntax.py``) turns ``a (red:1.2) [cat] BREAK sky`` into ``(text, weight)`` runs;
2. :func:`tokenize_prompt` turns the runs into 75-token chunks, each wrapped as BOS + 75 + EOS (padded
   with the tokenizer's pad token), with a weight per token; textual-inversion names become placeholder
   positions;
3. :func:`encode_tokens` runs the text encoder over every 77-token window on its own, puts the
   textual-inversion vectors in, scales each token's embedding by its weight and concatenates the windows.

A plain prompt of at most 75 tokens goes through all three exactly as diffusers'
``StableDiffusionPipeline.encode_prompt`` does (same ids, same embeddings, bit for bit).

Textual-inversion positions are marked in ``input_ids`` by NEGATIVE ids: ``-1 - j`` stands for row ``j``
of ``embedding_vectors``. They carry their vectors with them, so the tokens do not depend on which
CLIP encodes them, and a text encoder that does not know about them fails loudly instead of reading a
wrong row.
"""
from __future__ import annotations

import inspect
import re
import weakref
from dataclasses import dataclass
from typing import Callable, Literal, Mapping, Sequence

import torch

from graphflow.errors import InvalidArgument, NodeInputError

from .prompt_syntax import is_break, parse_prompt_attention
from .speed import execution_device

DEFAULT_BACKTRACK_WINDOW = 20  # A1111's default "comma padding backtrack"
EMBEDDING_PREFIX = "embedding:"
Emphasis = Literal["original", "no_norm", "none"]


# ---------------------------------------------------------------------------------------------------
# 2. Tokens and chunks (1., the syntax, is nodes/prompt_syntax.py)
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptTokens:
    """A tokenized prompt: k windows of 77 tokens side by side.

    ``input_ids`` (1, 77k) long, negative ids mark textual-inversion rows (see the module docstring);
    ``weights`` (1, 77k) float32, 1.0 on BOS/EOS/padding; ``attention_mask`` (1, 77k), 1 = not padding;
    ``embedding_vectors`` (m, C) float32 or None when the prompt uses no embedding."""

    input_ids: torch.Tensor
    weights: torch.Tensor
    attention_mask: torch.Tensor
    chunks: int
    embedding_vectors: torch.Tensor | None = None


@dataclass(frozen=True)
class _Unit:
    """What chunking places: one text token, or all vectors of one embedding (never split)."""

    ids: tuple[int, ...]
    weight: float
    is_comma: bool = False


def tokenize_prompt(
    tokenizer,
    text: str,
    embeddings: Mapping[str, torch.Tensor] | None = None,
    comma_backtrack: bool = False,
    backtrack_window: int = DEFAULT_BACKTRACK_WINDOW,
    check: Callable[[], None] | None = None,
) -> PromptTokens:
    """Tokenize a prompt with emphasis, ``BREAK`` and textual-inversion names into 77-token windows.

    Tokens fill windows of 75; ``BREAK`` starts a new window. With ``comma_backtrack`` a window that would
    overflow while a comma sits within its last ``backtrack_window`` tokens ends after that comma instead
    (A1111's "comma padding backtrack"). An embedding never straddles two windows. Embedding names are
    matched case-insensitively as whole words, bare (``easynegative``) or as ``embedding:easynegative``;
    an ``embedding:`` name that is not loaded is an error. ``check`` (a node's ``ctx.check_cancelled``) is
    called between the prompt's pieces, so a huge prompt can be cancelled while it is tokenized."""
    window = int(tokenizer.model_max_length)
    chunk_length = window - 2
    lookup = _embedding_lookup(embeddings or {})
    table = EmbeddingTable()
    comma = _comma_id(tokenizer)
    units: list[_Unit | None] = []  # None = BREAK
    for run in parse_prompt_attention(text):
        if check is not None:
            check()
        if is_break(run):
            units.append(None)
            continue
        piece_text, weight = run
        for piece in _split_embedding_names(piece_text, lookup):
            if isinstance(piece, str):
                units.extend(_Unit((t,), weight, t == comma) for t in text_ids(tokenizer, piece))
            else:
                name, vectors = piece
                if vectors.shape[0] > chunk_length:
                    raise InvalidArgument("text", f"embedding {name!r} has {vectors.shape[0]} vectors, more than a "
                                          f"window holds", f"at most {chunk_length}", vectors.shape[0])
                units.append(_Unit(table.slot_ids(name, vectors), weight))
    window_backtrack = backtrack_window if comma_backtrack else 0
    chunks = _fill_chunks(units, chunk_length, window_backtrack)
    ids, weights, mask = [], [], []
    for chunk_ids, chunk_weights in chunks:
        padding = chunk_length - len(chunk_ids)
        ids += [tokenizer.bos_token_id, *chunk_ids, tokenizer.eos_token_id] + [tokenizer.pad_token_id] * padding
        weights += [1.0, *chunk_weights, 1.0] + [1.0] * padding
        mask += [1] * (len(chunk_ids) + 2) + [0] * padding
    return PromptTokens(
        input_ids=torch.tensor([ids], dtype=torch.long),
        weights=torch.tensor([weights], dtype=torch.float32),
        attention_mask=torch.tensor([mask], dtype=torch.long),
        chunks=len(chunks),
        embedding_vectors=table.vectors(),
    )


def text_ids(tokenizer, text: str) -> list[int]:
    if not text.strip():
        return []
    # verbose=False: long prompts are expected here, the "sequence too long" warning is noise
    return list(tokenizer(text, add_special_tokens=False, truncation=False, verbose=False).input_ids)


def _comma_id(tokenizer) -> int:
    return tokenizer(",", add_special_tokens=False, verbose=False).input_ids[-1]


def _fill_chunks(units: Sequence[_Unit | None], chunk_length: int, backtrack_window: int):
    """Distribute units over chunks of ``chunk_length`` token positions (BOS/EOS not included)."""
    chunks: list[tuple[list[int], list[float]]] = []
    ids: list[int] = []
    weights: list[float] = []
    last_comma = -1  # position of the last comma in the current chunk

    def close() -> None:
        nonlocal ids, weights, last_comma
        chunks.append((ids, weights))
        ids, weights, last_comma = [], [], -1

    for unit in units:
        if unit is None:
            close()
            continue
        if unit.is_comma:
            last_comma = len(ids)
        elif backtrack_window and len(ids) == chunk_length and last_comma >= 0 \
                and len(ids) - last_comma <= backtrack_window:
            # the chunk is full mid-phrase: end it after the comma and carry the phrase over
            cut = last_comma + 1
            moved_ids, moved_weights = ids[cut:], weights[cut:]
            ids, weights = ids[:cut], weights[:cut]
            close()
            ids, weights = moved_ids, moved_weights
        if len(ids) + len(unit.ids) > chunk_length:
            close()
        ids.extend(unit.ids)
        weights.extend([unit.weight] * len(unit.ids))
    if ids or not chunks:
        close()
    return chunks


# -- textual-inversion names ---------------------------------------------------------------------


def _embedding_lookup(embeddings: Mapping[str, torch.Tensor]) -> dict[str, tuple[str, torch.Tensor]]:
    lookup: dict[str, tuple[str, torch.Tensor]] = {}
    for name, vectors in embeddings.items():
        key = name.lower()
        if key in lookup:
            raise InvalidArgument("embeddings", f"two embeddings differ only in case: {lookup[key][0]!r} and {name!r}")
        lookup[key] = (name, vectors if vectors.ndim == 2 else vectors.reshape(1, -1))
    return lookup


def _split_embedding_names(text: str, lookup: dict[str, tuple[str, torch.Tensor]]):
    """Yield text pieces and (name, vectors) for every embedding name in ``text``."""
    names = sorted(lookup, key=len, reverse=True)  # longest first: "bad-hands-5" before "bad"
    bare = "|".join(re.escape(n) for n in names)
    # explicit names may hold inner dots and dashes; a sentence's final "." is not part of the name
    pattern = rf"(?<![\w:]){re.escape(EMBEDDING_PREFIX)}(?P<explicit>[\w\-]+(?:\.[\w\-]+)*)"
    if bare:
        pattern += rf"|(?<![\w:])(?P<bare>{bare})(?![\w])"
    position = 0
    for match in re.finditer(pattern, text, flags=re.IGNORECASE):
        name = (match.group("explicit") or match.group("bare")).lower()
        if name not in lookup:
            raise InvalidArgument("text", f"the prompt uses {EMBEDDING_PREFIX}{name} but no such embedding is loaded "
                                  "(load it with LoadEmbeddings)", sorted(v[0] for v in lookup.values()) or "an embedding",
                                  name)
        yield text[position:match.start()]
        yield lookup[name]
        position = match.end()
    yield text[position:]


class EmbeddingTable:
    """Rows of textual-inversion vectors used by one prompt; each embedding stored once."""

    def __init__(self) -> None:
        self.rows: list[torch.Tensor] = []
        self.start: dict[str, int] = {}
        self.count = 0

    def slot_ids(self, name: str, vectors: torch.Tensor) -> tuple[int, ...]:
        if name not in self.start:
            self.start[name] = self.count
            self.rows.append(vectors.detach().to("cpu", torch.float32))
            self.count += vectors.shape[0]
        first = self.start[name]
        return tuple(-1 - row for row in range(first, first + vectors.shape[0]))

    def vectors(self) -> torch.Tensor | None:
        return torch.cat(self.rows) if self.rows else None


# ---------------------------------------------------------------------------------------------------
# 3. Encoding
# ---------------------------------------------------------------------------------------------------


def encode_tokens(
    text_encoder: torch.nn.Module,
    input_ids: torch.Tensor,
    weights: torch.Tensor | None = None,
    clip_skip: int = 1,
    emphasis: Emphasis = "original",
    embedding_vectors: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    on_window: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Text embeddings (B, 77k, C) for token ids (B, 77k): every 77-token window encoded on its own.

    ``clip_skip`` counts from the end as A1111 does: 1 = the last layer, n = the n-th layer from the end
    followed by the final layer norm (diffusers' ``clip_skip = n - 1``). ``emphasis``: "original" scales
    each token's embedding by its weight and then rescales the window so its mean is what it was before
    (A1111's default), "no_norm" scales without restoring the mean, "none" ignores the weights.
    ``attention_mask`` is only read by text encoders whose config sets ``use_attention_mask``. ``on_window(done,
    total)`` is called after each window (a node passes ``ctx.progress``, which also stops a cancelled run)."""
    return encode_text(text_encoder, input_ids, weights, clip_skip, emphasis, embedding_vectors, attention_mask,
                       on_window=on_window)[0]


def encode_text(
    text_encoder: torch.nn.Module,
    input_ids: torch.Tensor,
    weights: torch.Tensor | None = None,
    clip_skip: int = 1,
    emphasis: Emphasis = "original",
    embedding_vectors: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    penultimate: bool = False,
    pooled: bool = False,
    on_window: Callable[[int, int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`encode_tokens`, and what SDXL reads besides. ``penultimate`` (SDXL): the output of the layer before
    the one ``clip_skip`` names, without the final layer norm (diffusers' ``hidden_states[-(clip_skip + 1)]``).
    ``pooled``: also the projected final state at the first window's end-of-text token (B, P) — the pooled
    prompt embedding of a CLIPTextModelWithProjection, unweighted, as diffusers and A1111 take it."""
    core = getattr(text_encoder, "text_model", text_encoder)  # CLIPTextModelWithProjection wraps one
    window = int(core.embeddings.position_embedding.num_embeddings)
    layers = len(core.encoder.layers)
    lowest = 0 if penultimate else 1  # penultimate with clip_skip 0: the last layer's raw output (ComfyUI's SDXL -1)
    if not lowest <= clip_skip <= layers:
        raise InvalidArgument("clip_skip", f"this text encoder has {layers} layers", f"{lowest}..{layers}", clip_skip)
    if input_ids.ndim != 2 or input_ids.shape[1] % window:
        raise InvalidArgument("input_ids", f"token ids must be (batch, {window}·k)", f"(B, {window}·k)", tuple(input_ids.shape))
    if weights is not None and weights.shape != input_ids.shape:
        raise InvalidArgument("weights", "weights must match token ids", tuple(input_ids.shape), tuple(weights.shape))
    use_mask = bool(getattr(text_encoder.config, "use_attention_mask", False))
    device = execution_device(text_encoder)  # an offloaded encoder's weights rest in CPU memory (nodes/speed.py)
    outputs, pooled_output = [], None
    total = input_ids.shape[1] // window
    with torch.no_grad():
        for start in range(0, input_ids.shape[1], window):
            ids = input_ids[:, start:start + window].to(device)
            mask = attention_mask[:, start:start + window].to(device) if use_mask and attention_mask is not None else None
            pool = pooled and start == 0
            hidden, final = _run_text_encoder(core, _input_embeddings(core, ids, embedding_vectors), clip_skip, mask,
                                              penultimate, run_all=pool)
            if pool:
                pooled_output = text_encoder.text_projection(final[torch.arange(ids.shape[0]), _eos_positions(text_encoder, ids)])
            if weights is not None and emphasis != "none":
                hidden = apply_emphasis(hidden, weights[:, start:start + window], emphasis)
            outputs.append(hidden)
            if on_window is not None:
                on_window(len(outputs), total)
    return torch.cat(outputs, dim=1), pooled_output


def _eos_positions(text_encoder, ids: torch.Tensor) -> torch.Tensor:
    """Where transformers' CLIP pools: the highest id for configs with the old ``eos_token_id`` 2, else the first
    end-of-text id (textual-inversion slots are negative, so neither rule can pick one)."""
    eos = text_encoder.config.eos_token_id
    return ids.argmax(dim=-1) if eos == 2 else (ids == eos).int().argmax(dim=-1)


def _input_embeddings(core, ids: torch.Tensor, embedding_vectors: torch.Tensor | None) -> torch.Tensor:
    """Token-embedding lookup, with textual-inversion rows written into the negative-id positions.

    Done on a fresh tensor, so the shared text encoder's embedding table is never touched."""
    table = core.embeddings.token_embedding
    slots = ids < 0
    if not slots.any():
        return table(ids)
    if embedding_vectors is None:
        raise InvalidArgument("embedding_vectors", "tokens mark textual-inversion positions but carry no embedding vectors")
    rows = -1 - ids[slots]
    if int(rows.max()) >= embedding_vectors.shape[0]:
        raise InvalidArgument("input_ids", "a textual-inversion position points past the tokens' embedding vectors",
                              f"< {embedding_vectors.shape[0]}", int(rows.max()))
    if embedding_vectors.shape[1] != table.embedding_dim:
        raise InvalidArgument("text_encoder", f"the prompt's textual-inversion vectors have width "
                              f"{embedding_vectors.shape[1]}, this text encoder {table.embedding_dim}",
                              f"width {table.embedding_dim}", f"width {embedding_vectors.shape[1]}")
    embeds = table(ids.clamp(min=0))
    embeds[slots] = embedding_vectors.to(embeds.device, embeds.dtype)[rows]
    return embeds


def _run_text_encoder(core, inputs_embeds: torch.Tensor, clip_skip: int, attention_mask: torch.Tensor | None,
                      penultimate: bool = False, run_all: bool = False):
    """The CLIP text transformer from input embeddings: (the output of layer ``-clip_skip`` through the final layer
    norm, or with ``penultimate`` the raw output of the layer before it; the final layer's normed output when
    ``run_all``, else None).

    transformers' CLIPTextModel.forward only takes token ids, so this replays its steps (position
    embeddings, causal mask, layers, final norm) with the same modules and the same calls."""
    from transformers.masking_utils import create_causal_mask

    hidden = core.embeddings(inputs_embeds=inputs_embeds)
    # Newer transformers renamed past_key_values to cache (the old name warns); there is no cache either way.
    no_cache = {"cache" if "cache" in inspect.signature(create_causal_mask).parameters else "past_key_values": None}
    mask = create_causal_mask(config=core.config, inputs_embeds=hidden, attention_mask=attention_mask, **no_cache)
    layers = core.encoder.layers
    read = len(layers) - clip_skip + (0 if penultimate else 1)  # how many layers the read output has passed
    states = [hidden]
    for layer in layers[: len(layers) if run_all else read]:
        states.append(layer(states[-1], mask, is_causal=True))
    selected = states[read] if penultimate else core.final_layer_norm(states[read])
    return selected, core.final_layer_norm(states[-1]) if run_all else None


MEAN_NOISE_FLOOR = 1e-4  # relative: far above float32 noise (~1e-7), far below a real encoder's mean


def apply_emphasis(hidden: torch.Tensor, weights: torch.Tensor, emphasis: Emphasis = "original") -> torch.Tensor:
    """Scale one window's embeddings (B, 77, C) by per-token weights (B, 77).

    "original" then restores the mean the window had before scaling (A1111: taken over the whole
    window batch). Weights that are all 1.0 return the embeddings unchanged, bit for bit.

    A1111 multiplies by ``mean_before / mean_after`` unconditionally. Where either mean is float noise (a
    LayerNorm without bias leaves every token with mean zero) that factor is noise too — on the tiny CLIP it
    came out as -6.5 and flipped every embedding's sign — and a negative factor always inverts the prompt.
    So the mean is restored only when both means stand out of the noise (above ``MEAN_NOISE_FLOOR`` of
    the mean absolute value) and share a sign; otherwise "original" leaves the weighted values as
    "no_norm" does. Real SD text encoders (LayerNorm with bias) are never near that floor."""
    if emphasis == "none" or bool((weights == 1.0).all()):
        return hidden
    scaled_dtype = hidden.dtype
    values = hidden.float()
    weighted = values * weights.to(values.device, torch.float32).unsqueeze(-1)
    if emphasis == "original":
        before, after = values.mean(), weighted.mean()
        floor = MEAN_NOISE_FLOOR * values.abs().mean()
        if bool(before.abs() > floor) and bool(after.abs() > floor) and bool(before * after > 0):
            weighted = weighted * (before / after)
    elif emphasis != "no_norm":
        raise NodeInputError("emphasis", "unknown emphasis mode", "original, no_norm or none", emphasis)
    return weighted.to(scaled_dtype)


# ---------------------------------------------------------------------------------------------------
# Positive/negative of different lengths
# ---------------------------------------------------------------------------------------------------


# text encoder -> {(token ids of "", clip_skip): encoded empty prompt}. Text encoders are never changed in place
# (LoRA and merges make new modules), so the encoding is a pure function of the module and those ids; the entry
# goes when the module does. Keyed by the ids, not the tokenizer object, so no tokenizer can be mistaken for another.
_EMPTY_CHUNKS: "weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple, torch.Tensor]]" = weakref.WeakKeyDictionary()


def encode_empty_chunk(tokenizer, text_encoder: torch.nn.Module, clip_skip: int = 1, penultimate: bool = False) -> torch.Tensor:
    """The empty prompt encoded (1, 77, C): what a shorter conditioning is padded with. Encoded once per text
    encoder, clip_skip and layer choice (``penultimate``: SDXL's), since every CLIPTextEncode carries it."""
    empty = tokenize_prompt(tokenizer, "")
    known = _EMPTY_CHUNKS.setdefault(text_encoder, {})
    key = (tuple(empty.input_ids.flatten().tolist()), clip_skip, penultimate)
    if key not in known:
        known[key] = encode_text(text_encoder, empty.input_ids, empty.weights, clip_skip, attention_mask=empty.attention_mask,
                                 penultimate=penultimate)[0]
    return known[key]


def pad_to_same_chunks(a: torch.Tensor, b: torch.Tensor, empty_a: torch.Tensor,
                       empty_b: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Make two conditionings (B, 77·k, C) the same length by appending empty-prompt windows to the shorter.

    Classifier-free guidance batches positive and negative together, so their lengths must agree (A1111
    pads the same way). ``empty_a`` / ``empty_b`` (1, 77, C) are each side's encoded empty prompt;
    ``empty_b`` defaults to ``empty_a``."""
    empty_b = empty_a if empty_b is None else empty_b
    window = empty_a.shape[1]
    if a.shape[1] % window or b.shape[1] % window:
        raise InvalidArgument("a" if a.shape[1] % window else "b", f"conditioning lengths {a.shape[1]} and "
                              f"{b.shape[1]} are not multiples of {window}", f"a multiple of {window}", (a.shape[1], b.shape[1]))
    return _pad_with(a, empty_a, b.shape[1]), _pad_with(b, empty_b, a.shape[1])


def _pad_with(embeds: torch.Tensor, empty: torch.Tensor, length: int) -> torch.Tensor:
    missing = (length - embeds.shape[1]) // empty.shape[1]
    if missing <= 0:
        return embeds
    filler = empty.to(embeds.device, embeds.dtype).expand(embeds.shape[0], -1, -1).repeat(1, missing, 1)
    return torch.cat([embeds, filler], dim=1)


def pad_conditionings(positive, negative) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`pad_to_same_chunks` for two CONDITIONING values, each padded with its own ``empty_chunk``."""
    if positive.embeds.shape[1] == negative.embeds.shape[1]:
        return positive.embeds, negative.embeds
    shorter, longer = (positive, negative) if positive.embeds.shape[1] < negative.embeds.shape[1] else (negative, positive)
    if shorter.empty_chunk is None:
        raise InvalidArgument("positive" if shorter is positive else "negative",
                              "positive and negative conditioning differ in length and the shorter one carries no "
                              "encoded empty prompt to pad with", f"{longer.embeds.shape[1]} tokens, or a "
                              "conditioning from CLIPTextEncode", f"{shorter.embeds.shape[1]} tokens")
    empty_pos = positive.empty_chunk if positive.empty_chunk is not None else negative.empty_chunk
    empty_neg = negative.empty_chunk if negative.empty_chunk is not None else positive.empty_chunk
    return pad_to_same_chunks(positive.embeds, negative.embeds, empty_pos, empty_neg)


def check_prompt_chunks(ctx, chunks: int, input_name: str) -> None:
    """A node's ``ctx`` refuses more 75-token windows than the server's ``prompt_chunks`` limit allows."""
    ctx.check_limit("prompt_chunks", chunks, input_name, "the prompt's 75-token windows (a BREAK starts one)")
