"""ComfyUI's text-encoding and conditioning nodes: CLIPTextEncode, CLIPSetLastLayer, ConditioningCombine,
ConditioningSetArea, ConditioningZeroOut.

comfy.CLIPTextEncode weighs prompts as ComfyUI does (nodes/comfy/prompt.py), not as graphflow's TextEncode.
``embedding:NAME`` finds NAME among the embeddings attached to the CLIP (LoadEmbeddings), then in the models'
``embeddings`` folders, as ComfyUI reads its embeddings folder; a name found in neither is an error (ComfyUI
warns and drops it)."""
from __future__ import annotations

import hashlib
import re
from dataclasses import replace

import torch
from pydantic import Field

from graphflow.context import RunContext
from graphflow.errors import NodeInputError, node_inputs
from graphflow.node import Input, node

from ..conditioning import is_sdxl
from ..embeddings import available_embeddings, embedding_folders, find_embedding, load_embedding
from ..prompt import EMBEDDING_PREFIX, check_prompt_chunks
from ..search import file_fingerprint
from ..values import CLIP, CONDITIONING, Clip, Conditioning
from .prompt import MissingEmbedding, encode_weighted, tokenize_weighted

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


def _fingerprint(literals: dict, settings) -> str:
    files = _embedding_files(str(literals.get("text", "")), settings)
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


def encode_comfy_prompt(clip: Clip, text: str, ctx: RunContext) -> Conditioning:
    """A prompt encoded ComfyUI's way, with the encoded empty prompt for graphflow's Sample to pad with. The
    windows are bounded by the server's ``prompt_chunks`` limit, as graphflow's own prompts are."""
    if is_sdxl(clip):
        raise NodeInputError("clip", "the pack encodes prompts ComfyUI's way for one text encoder; SDXL's two are not "
                             "there yet: encode with graphflow's TextEncode (its conditioning runs in comfy.KSampler)",
                             "an SD 1.x / 2.x CLIP", clip.family)
    find, folders = _embedding_finder(clip, ctx.settings)
    try:
        tokens = tokenize_weighted(clip.tokenizer, text, find, ctx.check_cancelled)
    except MissingEmbedding as missing:
        names = sorted(set(clip.embeddings) | set(available_embeddings(folders)))
        raise NodeInputError("text", f"the prompt uses {EMBEDDING_PREFIX}{missing} but there is no such embedding "
                             "(ComfyUI would drop it; graphflow stops)", names or "an embedding in the models' "
                             "embeddings folder", str(missing)) from None
    check_prompt_chunks(ctx, int(tokens.input_ids.shape[0]), "text")
    clip_skip = clip_skip_of(clip)
    with node_inputs(text_encoder="clip", embedding_vectors="text", input_ids="text"):
        embeds = encode_weighted(clip.tokenizer, clip.text_encoder, tokens, clip_skip)
        empty = encode_weighted(clip.tokenizer, clip.text_encoder, tokenize_weighted(clip.tokenizer, "", find), clip_skip)
    return Conditioning(embeds=embeds, text=(text,), empty_chunk=empty)


@node(name="comfy.CLIPTextEncode", outputs={"CONDITIONING": CONDITIONING}, category="comfy/conditioning",
      fingerprint=_fingerprint)
def CLIPTextEncode(
    text: str = Field("", description="the prompt, ComfyUI's syntax: (word) ×1.1, (word:1.3) = 1.3, embedding:NAME"),
    clip: Clip = Input(CLIP),
    *,
    ctx: RunContext,
) -> Conditioning:
    """Encode a prompt with ComfyUI's weighting (tokens pulled from the empty prompt by their weight)."""
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
    """Every entry's embeddings set to zeros (areas and strengths kept): a negative that is truly nothing."""
    def zeroed(entry: Conditioning) -> Conditioning:
        empty = None if entry.empty_chunk is None else torch.zeros_like(entry.empty_chunk)
        return replace(entry, embeds=torch.zeros_like(entry.embeds), empty_chunk=empty)

    first, *rest = [zeroed(entry) for entry in conditioning.entries]
    return replace(first, also=tuple(rest))
