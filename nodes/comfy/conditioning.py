"""ComfyUI's text-encoding and conditioning nodes: CLIPTextEncode, CLIPSetLastLayer, ConditioningCombine,
ConditioningSetArea, ConditioningZeroOut.

comfy.CLIPTextEncode weighs prompts as ComfyUI does (nodes/comfy/prompt.py), not as graphflow's TextEncode.
``embedding:NAME`` finds NAME among the embeddings attached to the CLIP (LoadEmbeddings), then in the models'
``embeddings`` folders, as ComfyUI reads its embeddings folder; a name found in neither is an error (ComfyUI
warns and drops it). An SDXL CLIP (base or refiner) is encoded as ComfyUI's SDXL CLIP encodes: see
:func:`encode_comfy_prompt`."""
from __future__ import annotations

import hashlib
import re
from dataclasses import replace

import torch
from pydantic import Field

from graphflow.context import RunContext
from graphflow.errors import NodeInputError, node_inputs
from graphflow.node import Input, node

from ..conditioning import encoders, is_sdxl
from ..embeddings import available_embeddings, embedding_folders, find_embedding, load_embedding
from ..prompt import EMBEDDING_PREFIX, check_prompt_chunks, pad_to_same_chunks
from ..search import file_fingerprint
from ..values import CLIP, CONDITIONING, Clip, Conditioning
from .prompt import MissingEmbedding, encode_weighted, encode_weighted_pooled, tokenize_weighted

MAX_RESOLUTION = 16384  # ComfyUI's bound on sizes in pixels
_EMBEDDING_NAME = re.compile(re.escape(EMBEDDING_PREFIX) + r"(\S+)")


def _embedding_files(text: str, settings) -> list[tuple[str, object]]:
    """The embedding files a prompt's ``embedding:`` names would load from the folders (for the cache key)."""
    folders = embedding_folders(settings)
    found = []
    for name in _EMBEDDING_NAME.findall(text):
        path = find_embedding(folders, name) or find_embedding(folders, name.strip(","))
        if path is not None:
            found.append((name, path))
    return found


def prompt_fingerprint(literals: dict, settings) -> str:
    """The embedding files a prompt node's texts name (text; SDXL's text_g / text_l), for the cache key."""
    texts = " ".join(str(literals.get(key, "")) for key in ("text", "text_g", "text_l"))
    files = _embedding_files(texts, settings)
    return hashlib.sha256("\n".join(f"{n}|{file_fingerprint(p)}" for n, p in files).encode()).hexdigest()


def _embedding_finder(clip: Clip, settings):
    folders = embedding_folders(settings)

    def find(name: str) -> "torch.Tensor | None":
        if name in clip.embeddings:
            return clip.embeddings[name]
        path = find_embedding(folders, name)
        if path is None:
            return None
        try:
            return load_embedding(path)
        except ValueError as exc:
            raise NodeInputError("text", str(exc), "a textual-inversion embedding file", path.name) from exc

    return find, folders


def clip_skip_of(clip: Clip) -> int:
    """graphflow's clip_skip for the CLIP's stop_at_layer (-n -> n; beyond the encoder's depth: the last layer;
    not set: the penultimate layer for SD 2.x, as ComfyUI encodes it, else the last)."""
    if clip.stop_at_layer is None:
        return 2 if clip.family == "sd2" else 1
    core = getattr(clip.text_encoder, "text_model", clip.text_encoder)
    layers = len(core.encoder.layers)
    return 1 if -clip.stop_at_layer > layers else -clip.stop_at_layer


def layer_read(clip: Clip, text_encoder) -> tuple[int, bool]:
    """(clip_skip, penultimate) for nodes.prompt.encode_text: the layer ComfyUI reads from this encoder.

    SD 1.x / 2.x go through the final layer norm (:func:`clip_skip_of`). SDXL's encoders are read without it:
    stop_at_layer -n is the n-th layer's output from the end (default -2, the penultimate); past the encoder's
    depth ComfyUI takes the last layer through the norm. Each encoder counts its own depth (12 and 32 layers)."""
    if not is_sdxl(clip):
        return clip_skip_of(clip), False
    layers = len(getattr(text_encoder, "text_model", text_encoder).encoder.layers)
    from_end = 2 if clip.stop_at_layer is None else -clip.stop_at_layer
    return (1, False) if from_end > layers else (from_end - 1, True)


def _part_finder(find, widths: list[int], index: int):
    """The finder for one of SDXL's encoders: an SDXL embedding holds clip_l's and clip_g's vectors side by side
    (nodes/embeddings.py), each encoder reads its own part."""
    start, stop, total = sum(widths[:index]), sum(widths[:index + 1]), sum(widths)

    def find_part(name: str) -> "torch.Tensor | None":
        vectors = find(name)
        if vectors is None:
            return None
        if vectors.shape[-1] != total:
            raise NodeInputError("text", f"{EMBEDDING_PREFIX}{name} holds vectors {vectors.shape[-1]} wide; this SDXL "
                                 f"CLIP's encoders take {' + '.join(map(str, widths))}", "an SDXL embedding (clip_l "
                                 "and clip_g)", f"width {vectors.shape[-1]}")
        return vectors.reshape(-1, total)[:, start:stop]

    return find_part


def _weighted_tokens(tokenizer, text: str, find, folders, clip: Clip, ctx: RunContext):
    try:
        tokens = tokenize_weighted(tokenizer, text, find, ctx.check_cancelled)
    except MissingEmbedding as missing:
        names = sorted(set(clip.embeddings) | set(available_embeddings(folders)))
        raise NodeInputError("text", f"the prompt uses {EMBEDDING_PREFIX}{missing} but there is no such embedding "
                             "(ComfyUI would drop it; graphflow stops)", names or "an embedding in the models' "
                             "embeddings folder", str(missing)) from None
    check_prompt_chunks(ctx, int(tokens.input_ids.shape[0]), "text")
    return tokens


def encode_comfy_prompt(clip: Clip, text: str, ctx: RunContext, text_2: str | None = None) -> Conditioning:
    """A prompt encoded ComfyUI's way, with the encoded empty prompt for graphflow's Sample to pad with. The
    windows are bounded by the server's ``prompt_chunks`` limit, as graphflow's own prompts are.

    SDXL (ComfyUI's SDXLClipModel): each encoder weighs its own tokens against its own empty prompt, the features
    are joined (clip_l's first), the pooled embedding is the last encoder's, of the first window. ``text_2`` is
    the second encoder's text (CLIPTextEncodeSDXL's text_g), ``text`` otherwise; when their windows differ in
    number the shorter is padded with encoded empty windows, as ComfyUI pads its tokens."""
    find, folders = _embedding_finder(clip, ctx.settings)
    pairs, sdxl = encoders(clip), is_sdxl(clip)
    widths = [int(encoder.get_input_embeddings().embedding_dim) for _, encoder in pairs]
    embeds, empties, pooled = [], [], None
    for index, (tokenizer, encoder) in enumerate(pairs):
        find_here = find if len(pairs) == 1 else _part_finder(find, widths, index)
        here = text_2 if index == 1 and text_2 is not None else text
        tokens = _weighted_tokens(tokenizer, here, find_here, folders, clip, ctx)
        clip_skip, penultimate = layer_read(clip, encoder)
        with node_inputs(text_encoder="clip", embedding_vectors="text", input_ids="text"):
            hidden, pooled_here = encode_weighted_pooled(tokenizer, encoder, tokens, clip_skip, penultimate,
                                                         pooled=sdxl and index == len(pairs) - 1)
            empty = encode_weighted(tokenizer, encoder, tokenize_weighted(tokenizer, "", find_here), clip_skip,
                                    penultimate)
        embeds.append(hidden)
        empties.append(empty)
        pooled = pooled_here if pooled_here is not None else pooled
    if len(embeds) > 1 and embeds[0].shape[1] != embeds[1].shape[1]:
        embeds[0], embeds[1] = pad_to_same_chunks(embeds[0], embeds[1], empties[0], empties[1])
    return Conditioning(embeds=torch.cat(embeds, dim=-1), text=(text,), empty_chunk=torch.cat(empties, dim=-1),
                        pooled=pooled)


@node(name="comfy.CLIPTextEncode", outputs={"CONDITIONING": CONDITIONING}, category="comfy/conditioning",
      fingerprint=prompt_fingerprint)
def CLIPTextEncode(
    text: str = Field("", description="the prompt, ComfyUI's syntax: (word) ×1.1, (word:1.3) = 1.3, embedding:NAME"),
    clip: Clip = Input(CLIP),
    *,
    ctx: RunContext,
) -> Conditioning:
    """Encode a prompt with ComfyUI's weighting (tokens pulled from the empty prompt by their weight); with an
    SDXL CLIP both encoders read the text and the pooled embedding comes with it, the size conditioning left to
    comfy.KSampler's defaults (the latent's size)."""
    return encode_comfy_prompt(clip, text, ctx)


@node(name="comfy.CLIPSetLastLayer", outputs={"CLIP": CLIP}, category="comfy/conditioning")
def CLIPSetLastLayer(
    clip: Clip = Input(CLIP),
    stop_at_clip_layer: int = Field(-1, ge=-24, le=-1, description="-1 = the last layer, -2 = the one before (clip skip 2)"),
) -> Clip:
    """Choose the text encoder layer comfy.CLIPTextEncode reads (then the final layer norm, as ComfyUI does)."""
    return replace(clip, stop_at_layer=stop_at_clip_layer)


@node(name="comfy.ConditioningCombine", outputs={"CONDITIONING": CONDITIONING}, category="comfy/conditioning")
def ConditioningCombine(conditioning_1: Conditioning = Input(CONDITIONING),
                        conditioning_2: Conditioning = Input(CONDITIONING)) -> Conditioning:
    """Both conditionings' entries in one: comfy.KSampler predicts each and averages them (by area and strength)."""
    first, *rest = conditioning_1.entries + conditioning_2.entries
    return replace(first, also=tuple(rest))


@node(name="comfy.ConditioningSetArea", outputs={"CONDITIONING": CONDITIONING}, category="comfy/conditioning")
def ConditioningSetArea(
    conditioning: Conditioning = Input(CONDITIONING),
    width: int = Field(64, ge=64, le=MAX_RESOLUTION),
    height: int = Field(64, ge=64, le=MAX_RESOLUTION),
    x: int = Field(0, ge=0, le=MAX_RESOLUTION),
    y: int = Field(0, ge=0, le=MAX_RESOLUTION),
    strength: float = Field(1.0, ge=0.0, le=10.0),
) -> Conditioning:
    """Confine every entry to a rectangle of the image (pixels; kept in latent pixels, divided by 8)."""
    area = (height // 8, width // 8, y // 8, x // 8)
    first, *rest = [replace(entry, area=area, strength=strength) for entry in conditioning.entries]
    return replace(first, also=tuple(rest))


@node(name="comfy.ConditioningZeroOut", outputs={"CONDITIONING": CONDITIONING}, category="comfy/conditioning")
def ConditioningZeroOut(conditioning: Conditioning = Input(CONDITIONING)) -> Conditioning:
    """Every entry's embeddings (and SDXL's pooled embedding) set to zeros, areas and strengths kept: a negative
    that is truly nothing."""
    def zeroed(entry: Conditioning) -> Conditioning:
        empty = None if entry.empty_chunk is None else torch.zeros_like(entry.empty_chunk)
        pooled = None if entry.pooled is None else torch.zeros_like(entry.pooled)
        return replace(entry, embeds=torch.zeros_like(entry.embeds), empty_chunk=empty, pooled=pooled)

    first, *rest = [zeroed(entry) for entry in conditioning.entries]
    return replace(first, also=tuple(rest))
