"""Socket values from prompts: what ``Tokenize`` / ``CLIPTextEncode`` call, for one text encoder or SDXL's two.

SD 1.x / 2.x: one tokenizer, one encoder, the layer ``clip_skip`` names through the final layer norm.
SDXL (``Clip.text_encoder_2`` set, or the refiner's single OpenCLIP encoder): every encoder reads its own tokens
(SDXL's tokenizers differ in their padding token), each encoder's penultimate hidden states (without the final
norm) are joined along the feature axis (768 + 1280 at full size) and the last encoder's projected end-of-text
state is the pooled prompt embedding the UNet's added conditioning takes — as
``StableDiffusionXLPipeline.encode_prompt`` does. Emphasis, ``BREAK`` and long prompts apply to each encoder."""
from __future__ import annotations

import torch

from graphflow.context import RunContext
from graphflow.errors import InvalidArgument

from .prompt import Emphasis, check_prompt_chunks, encode_empty_chunk, encode_text, pad_to_same_chunks, tokenize_prompt
from .values import Clip, Conditioning, Tokens


def is_sdxl(clip: Clip) -> bool:
    return clip.family.startswith("sdxl")


def encoders(clip: Clip) -> list[tuple[object, torch.nn.Module]]:
    """(tokenizer, text encoder) of each encoder, in the order their features are joined."""
    pairs = [(clip.tokenizer, clip.text_encoder)]
    if clip.text_encoder_2 is not None:
        pairs.append((clip.tokenizer_2, clip.text_encoder_2))
    return pairs


def tokens_for(tokenizer, text: str, embeddings, comma_backtrack: bool, ctx: RunContext | None = None) -> Tokens:
    tokens = tokenize_prompt(tokenizer, text, embeddings, comma_backtrack,
                             check=ctx.check_cancelled if ctx is not None else None)
    if ctx is not None:
        check_prompt_chunks(ctx, tokens.chunks, "text")
    return Tokens(input_ids=tokens.input_ids, weights=tokens.weights, text=(text,), chunks=tokens.chunks,
                  attention_mask=tokens.attention_mask, embedding_vectors=tokens.embedding_vectors)


def prompt_tokens(clip: Clip, text: str, comma_backtrack: bool = False, ctx: RunContext | None = None,
                  text_2: str = "") -> Tokens:
    """TOKENS for a prompt, with the CLIP's textual-inversion embeddings available by name. With a second text
    encoder (SDXL) the result carries that encoder's tokens as ``second``, of ``text_2`` or else of ``text``.
    With a node's ``ctx`` the tokenizing can be cancelled and the windows are bounded by the server's
    ``prompt_chunks`` limit."""
    if text_2 and clip.text_encoder_2 is None:
        raise InvalidArgument("text_2", "this CLIP has a single text encoder; text_2 is for SDXL's second one",
                              "an empty text_2", text_2)
    if clip.text_encoder_2 is None:
        return tokens_for(clip.tokenizer, text, clip.embeddings, comma_backtrack, ctx)
    # SDXL embeddings hold both encoders' vectors side by side (nodes/embeddings.py): each encoder gets its part
    first = int(clip.text_encoder.get_input_embeddings().embedding_dim)
    tokens = tokens_for(clip.tokenizer, text, {k: v[:, :first] for k, v in clip.embeddings.items()}, comma_backtrack,
                        ctx)
    second = tokens_for(clip.tokenizer_2, text_2 or text, {k: v[:, first:] for k, v in clip.embeddings.items()},
                        comma_backtrack, ctx)
    return tokens.replace(second=second)


def prompt_conditioning(clip: Clip, tokens: Tokens, clip_skip: int = 1, emphasis: Emphasis = "original",
                        ctx: RunContext | None = None) -> Conditioning:
    """CONDITIONING for TOKENS, carrying the encoded empty prompt that pads it against a longer one (and, for SDXL,
    the pooled embedding). With a node's ``ctx``, progress is reported per window (over every encoder's windows)
    and a cancelled run stops between windows."""
    if ctx is not None:
        check_prompt_chunks(ctx, tokens.chunks, "tokens")
    pairs, sdxl = encoders(clip), is_sdxl(clip)
    parts = [tokens] if len(pairs) == 1 else [tokens, tokens.second]
    if any(part is None for part in parts):
        raise InvalidArgument("tokens", "these tokens were made for one text encoder; this CLIP has two (SDXL): "
                              "tokenize with this CLIP", "tokens from Tokenize with this CLIP", "single-encoder tokens")
    embeds, empties, pooled = [], [], None
    windows = sum(part.input_ids.shape[1] // 77 for part in parts)
    for index, ((tokenizer, text_encoder), part) in enumerate(zip(pairs, parts)):
        last, done = index == len(pairs) - 1, sum(e.shape[1] // 77 for e in embeds)
        on_window = (lambda n, _total, done=done: ctx.progress(done + n, windows)) if ctx is not None else None
        hidden, pooled_here = encode_text(text_encoder, part.input_ids, part.weights, clip_skip, emphasis,
                                          part.embedding_vectors, part.attention_mask, penultimate=sdxl,
                                          pooled=sdxl and last, on_window=on_window)
        embeds.append(hidden)
        empties.append(encode_empty_chunk(tokenizer, text_encoder, clip_skip, penultimate=sdxl))
        pooled = pooled_here if last else pooled
    if len(embeds) > 1 and embeds[0].shape[1] != embeds[1].shape[1]:  # text_2 needs more (or fewer) windows
        embeds[0], embeds[1] = pad_to_same_chunks(embeds[0], embeds[1], empties[0], empties[1])
    return Conditioning(embeds=torch.cat(embeds, dim=-1), text=tokens.text, empty_chunk=torch.cat(empties, dim=-1),
                        pooled=pooled)
