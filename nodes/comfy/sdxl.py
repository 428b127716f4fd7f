"""ComfyUI's SDXL text encoders: CLIPTextEncodeSDXL (base: two prompts and the size conditioning) and
CLIPTextEncodeSDXLRefiner (one prompt, aesthetic score and size).

Both encode as comfy.CLIPTextEncode does for an SDXL CLIP (nodes/comfy/conditioning.py: ComfyUI's weighting per
encoder, the layer CLIPSetLastLayer chose, features joined, the pooled embedding of the last encoder) and set the
size conditioning comfy.KSampler reads (nodes/sdxl.py's keys), as given: a 0 stays 0, as in ComfyUI."""
from __future__ import annotations

from pydantic import Field

from graphflow.context import RunContext
from graphflow.errors import NodeInputError
from graphflow.node import Input, node

from ..conditioning import is_sdxl
from ..values import CLIP, CONDITIONING, Clip, Conditioning
from .conditioning import MAX_RESOLUTION, prompt_fingerprint, encode_comfy_prompt


def _size(default: int):
    return Field(default, ge=0, le=MAX_RESOLUTION)


def _encoded(clip: Clip, text: str, text_2: str | None, ctx: RunContext) -> Conditioning:
    if not is_sdxl(clip):
        raise NodeInputError("clip", "this node encodes for SDXL models; the CLIP is not an SDXL one",
                             "an SDXL CLIP (CheckpointLoaderSimple of an SDXL checkpoint)", clip.family)
    return encode_comfy_prompt(clip, text, ctx, text_2=text_2)


@node(name="comfy.CLIPTextEncodeSDXL", outputs={"CONDITIONING": CONDITIONING}, category="comfy/conditioning",
      fingerprint=prompt_fingerprint)
def CLIPTextEncodeSDXL(
    clip: Clip = Input(CLIP),
    width: int = _size(1024),
    height: int = _size(1024),
    crop_w: int = _size(0),
    crop_h: int = _size(0),
    target_width: int = _size(1024),
    target_height: int = _size(1024),
    text_g: str = Field("", description="the prompt for the OpenCLIP ViT-bigG encoder"),
    text_l: str = Field("", description="the prompt for the CLIP ViT-L encoder"),
    *,
    ctx: RunContext,
) -> Conditioning:
    """ComfyUI's SDXL prompt: text_l for the first encoder, text_g for the second; width/height are the original
    size, crop_w/crop_h the crop's left/top, target_width/target_height the target size."""
    if clip.text_encoder_2 is None:
        raise NodeInputError("clip", "CLIPTextEncodeSDXL needs SDXL base's two text encoders; this CLIP has one "
                             "(the refiner's: use CLIPTextEncodeSDXLRefiner)", "an SDXL base CLIP", clip.family)
    conditioning = _encoded(clip, text_l, text_g, ctx)
    sizes = {"original_width": width, "original_height": height, "crop_left": crop_w, "crop_top": crop_h,
             "target_width": target_width, "target_height": target_height}
    return conditioning.replace(sizes={key: float(value) for key, value in sizes.items()})


@node(name="comfy.CLIPTextEncodeSDXLRefiner", outputs={"CONDITIONING": CONDITIONING},
      category="comfy/conditioning", fingerprint=prompt_fingerprint)
def CLIPTextEncodeSDXLRefiner(
    ascore: float = Field(6.0, ge=0.0, le=1000.0, description="the aesthetic score the refiner is conditioned on "
                          "(ComfyUI's workflows: 6 on the positive, 2.5 on the negative)"),
    width: int = _size(1024),
    height: int = _size(1024),
    text: str = Field("", description="the prompt"),
    clip: Clip = Input(CLIP),
    *,
    ctx: RunContext,
) -> Conditioning:
    """ComfyUI's SDXL refiner prompt: the text with an aesthetic score and an original size."""
    conditioning = _encoded(clip, text, None, ctx)
    sizes = {"aesthetic_score": ascore, "original_width": width, "original_height": height}
    return conditioning.replace(sizes={key: float(value) for key, value in sizes.items()})
