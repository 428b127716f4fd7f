"""Prompt → tokens → text embeddings, exactly as diffusers' ``StableDiffusionPipeline.encode_prompt`` does it.

Two stages so that later work (prompt weighting, >77-token chunking, textual inversion) changes only
``Tokenize`` while ``CLIPTextEncode`` keeps one job: run the text encoder. ``TextEncode`` chains both for
workflows that do not care about the tokens.
"""
from __future__ import annotations

import torch
from pydantic import Field

from graphflow.errors import NodeInputError
from graphflow.node import Input, node

from .values import CLIP, CONDITIONING, TOKENS, Clip, Conditioning, Tokens


@node(outputs={"tokens": TOKENS}, category="conditioning")
def Tokenize(clip: Clip = Input(CLIP), text: str = Field("", description="the prompt"), ctx=None) -> Tokens:
    """Split a prompt into CLIP tokens, padded (or cut) to the tokenizer's 77-token window.

    Padding and truncation are diffusers' (``padding="max_length"``, ``truncation=True``); every token weighs
    1.0. The empty prompt is padding only, which is what diffusers encodes as the unconditional prompt."""
    tokenizer = clip.tokenizer
    window = tokenizer.model_max_length
    encoded = tokenizer([text], padding="max_length", max_length=window, truncation=True, return_tensors="pt")
    _warn_if_truncated(tokenizer, text, window, ctx)
    input_ids = encoded.input_ids  # on the CPU; CLIPTextEncode moves them to the encoder's device
    return Tokens(
        input_ids=input_ids,
        weights=torch.ones(input_ids.shape, dtype=torch.float32),
        text=(text,),
        chunks=1,
        attention_mask=encoded.attention_mask,
    )


def _warn_if_truncated(tokenizer, text: str, window: int, ctx) -> None:
    # Same check as diffusers: tokenize without a limit and report what fell off the end of the window.
    if ctx is None:
        return
    untruncated = tokenizer([text], padding="longest", return_tensors="pt").input_ids
    if untruncated.shape[-1] <= window:
        return
    removed = tokenizer.batch_decode(untruncated[:, window - 1 : -1])[0]
    ctx.warn(f"prompt longer than {window} tokens; this part was cut off: {removed!r}")


@node(outputs={"conditioning": CONDITIONING}, category="conditioning")
def CLIPTextEncode(
    clip: Clip = Input(CLIP),
    tokens: Tokens = Input(TOKENS),
    clip_skip: int = Field(
        1,
        ge=1,
        le=12,
        description="A1111 numbering: 1 = last layer (diffusers clip_skip=None), 2 = the layer before it "
        "(diffusers clip_skip=1), and so on",
    ),
) -> Conditioning:
    """Run the CLIP text encoder over tokens; the hidden states become the UNet's cross-attention input.

    ``clip_skip`` counts layers from the end the way A1111 does: 1 uses the final layer's output (after the
    final layer norm); n ≥ 2 takes the output of the n-th layer from the end and applies the final layer
    norm to it, which is diffusers' ``clip_skip = n - 1``."""
    encoder = clip.text_encoder
    layers = int(encoder.config.num_hidden_layers)
    if clip_skip > layers:
        raise NodeInputError("clip_skip", f"this text encoder has only {layers} layers", f"1..{layers}", clip_skip)
    device = next(encoder.parameters()).device
    input_ids = tokens.input_ids.to(device)
    attention_mask = None
    if getattr(encoder.config, "use_attention_mask", False):
        if tokens.attention_mask is None:
            raise NodeInputError("tokens", "this text encoder needs an attention mask; tokens carry none", "tokens from Tokenize", "no attention_mask")
        attention_mask = tokens.attention_mask.to(device)
    with torch.no_grad():
        if clip_skip == 1:
            embeds = encoder(input_ids, attention_mask=attention_mask)[0]
        else:
            hidden_states = encoder(input_ids, attention_mask=attention_mask, output_hidden_states=True).hidden_states
            # The final layer norm is part of the "last layer" output, so a skipped stack still needs it.
            embeds = final_layer_norm(encoder)(hidden_states[-clip_skip])
    embeds = embeds.to(dtype=encoder.dtype, device=device)
    return Conditioning(embeds=embeds, text=tokens.text)


def final_layer_norm(encoder: torch.nn.Module) -> torch.nn.Module:
    """The text encoder's final LayerNorm: transformers 5 keeps it on CLIPTextModel, 4.x on ``.text_model``."""
    return getattr(encoder, "text_model", encoder).final_layer_norm


@node(outputs={"conditioning": CONDITIONING}, category="conditioning")
def TextEncode(
    clip: Clip = Input(CLIP),
    text: str = Field("", description="the prompt"),
    clip_skip: int = Field(1, ge=1, le=12, description="A1111 numbering, see CLIPTextEncode"),
    ctx=None,
) -> Conditioning:
    """Tokenize and encode a prompt in one node (Tokenize followed by CLIPTextEncode)."""
    return CLIPTextEncode(clip, Tokenize(clip, text, ctx), clip_skip)
