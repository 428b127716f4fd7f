"""Prompt → tokens → text embeddings, with A1111's prompt syntax (the work itself is in ``nodes/prompt.py``).

Two stages so that a workflow can inspect or reuse the tokens: ``Tokenize`` parses emphasis, ``BREAK`` and
textual-inversion names into 77-token windows; ``CLIPTextEncode`` runs the text encoder over them and
applies the weights. ``TextEncode`` chains both for workflows that do not care about the tokens. A plain
prompt of up to 75 tokens gives exactly what diffusers' ``StableDiffusionPipeline.encode_prompt`` gives.
"""
from __future__ import annotations

from pydantic import Field

from graphflow.context import RunContext
from graphflow.errors import node_inputs
from graphflow.node import Input, node

from .conditioning import prompt_conditioning, prompt_tokens
from .prompt import Emphasis
from .values import CLIP, CONDITIONING, TOKENS, Clip, Conditioning, Tokens

TEXT = Field("", description="the prompt: (word:1.2) / (word) / [word] emphasis, BREAK, embedding names")
COMMA_BACKTRACK = Field(False, description="end a full 75-token chunk after a comma among its last 20 tokens "
                        "instead of splitting the phrase (A1111's comma padding backtrack)")
CLIP_SKIP = Field(1, ge=1, le=12, description="A1111 numbering: 1 = last layer (diffusers clip_skip=None), "
                  "2 = the layer before it (diffusers clip_skip=1), and so on; SDXL counts from its penultimate "
                  "layer: 1 = the penultimate, 2 = the one before")
TEXT_2 = Field("", description="SDXL: the prompt for the second text encoder (OpenCLIP bigG); empty = the same as "
               "text (diffusers' prompt_2)")
EMPHASIS = Field("original", description="original: weight tokens, then restore each window's mean (A1111's "
                 "default); no_norm: weight without restoring; none: ignore the weights")


@node(outputs={"tokens": TOKENS}, category="conditioning", version=3)
def Tokenize(clip: Clip = Input(CLIP), text: str = TEXT, comma_backtrack: bool = COMMA_BACKTRACK,
             text_2: str = TEXT_2, *, ctx: RunContext) -> Tokens:
    """Split a prompt into CLIP tokens with a weight each, in 77-token windows (BOS + 75 + EOS).

    Prompts longer than 75 tokens take several windows instead of being cut; ``BREAK`` starts a new one.
    Textual-inversion names loaded into the CLIP (LoadEmbeddings) become their vectors. The empty prompt
    is one window of padding, which is what diffusers encodes as the unconditional prompt."""
    with node_inputs(embeddings="clip"):
        return prompt_tokens(clip, text, comma_backtrack, ctx, text_2)


@node(outputs={"conditioning": CONDITIONING}, category="conditioning", version=3)
def CLIPTextEncode(
    clip: Clip = Input(CLIP),
    tokens: Tokens = Input(TOKENS),
    clip_skip: int = CLIP_SKIP,
    emphasis: Emphasis = EMPHASIS,
    *,
    ctx: RunContext,
) -> Conditioning:
    """Run the CLIP text encoder over tokens; the hidden states become the UNet's cross-attention input.

    Each 77-token window is encoded on its own and the results are joined (77·k positions). ``clip_skip``
    counts layers from the end the way A1111 does: 1 uses the final layer's output; n ≥ 2 takes the n-th
    layer from the end through the final layer norm (diffusers' ``clip_skip = n - 1``).

    SDXL: both text encoders' penultimate hidden states joined side by side, plus the second encoder's pooled
    embedding, as ``StableDiffusionXLPipeline`` encodes prompts."""
    with node_inputs(input_ids="tokens", weights="tokens", embedding_vectors="tokens", text_encoder="clip"):
        return prompt_conditioning(clip, tokens, clip_skip, emphasis, ctx)


@node(outputs={"conditioning": CONDITIONING}, category="conditioning", version=3)
def TextEncode(
    clip: Clip = Input(CLIP),
    text: str = TEXT,
    clip_skip: int = CLIP_SKIP,
    emphasis: Emphasis = EMPHASIS,
    comma_backtrack: bool = COMMA_BACKTRACK,
    text_2: str = TEXT_2,
    *,
    ctx: RunContext,
) -> Conditioning:
    """Tokenize and encode a prompt in one node (Tokenize followed by CLIPTextEncode)."""
    with node_inputs(embeddings="clip", input_ids="text", weights="text", embedding_vectors="text", text_encoder="clip"):
        return prompt_conditioning(clip, prompt_tokens(clip, text, comma_backtrack, ctx, text_2), clip_skip, emphasis, ctx)
