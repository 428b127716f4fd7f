"""SDXL's added conditioning: the pooled prompt embedding plus size, crop and aesthetic-score ids.

The SDXL UNet (``addition_embed_type="text_time"``) takes besides the text features ``added_cond_kwargs``:
``text_embeds``, the pooled embedding of the second text encoder, and ``time_ids``, six numbers for the base
(original height, width, crop top, left, target height, width) or five for the refiner (original size, crop,
aesthetic score). Which of the two a UNet wants is read from its added-embedding width.

``SDXLSizes`` sets them on a conditioning, its sizes defaulting to SDXL's 1024x1024 (as ComfyUI's SDXL nodes do).
What it leaves unset (a size of 0), and everything on a conditioning without SDXLSizes, takes the pipelines'
defaults, resolved in Sample where the image size is known: original and target size = the image's size, crop
= (0, 0), aesthetic score 6.0 on the positive and 2.5 on the negative; a negative without its own values takes
the positive's sizes and crop, as ``negative_original_size`` and friends default to the positive's in diffusers."""
from __future__ import annotations

from pydantic import Field

from graphflow.errors import NodeInputError
from graphflow.node import Input, node

from .values import CONDITIONING, Conditioning, Model

SIZE_KEYS = ("original_width", "original_height", "crop_left", "crop_top", "target_width", "target_height",
             "aesthetic_score")
POSITIVE_AESTHETIC, NEGATIVE_AESTHETIC = 6.0, 2.5  # StableDiffusionXLImg2ImgPipeline's defaults


SDXL_SIZE = 1024  # the size SDXL base and refiner were trained at


def _size(description: str, default: int = SDXL_SIZE):
    return Field(default, ge=0, le=16384, description=description)


@node(outputs={"conditioning": CONDITIONING}, category="conditioning")
def SDXLSizes(
    conditioning: Conditioning = Input(CONDITIONING),
    original_width: int = _size("the size the image is said to come from; 0 = the image's width"),
    original_height: int = _size("0 = the image's height"),
    crop_left: int = _size("the crop's top-left corner the image is said to be cut at (base and refiner)", 0),
    crop_top: int = _size("0 = uncropped, the pipelines' default", 0),
    target_width: int = _size("the size asked for (SDXL base); 0 = the image's width"),
    target_height: int = _size("0 = the image's height"),
    aesthetic_score: float = Field(0.0, ge=0.0, le=10.0, description="SDXL refiner only; 0 = the pipeline's "
                                   "default: 6.0 on the positive, 2.5 on the negative"),
) -> Conditioning:
    """Set SDXL's size and crop conditioning (and the refiner's aesthetic score) on a conditioning.

    Sizes default to SDXL's 1024; sizes of 0 and a score of 0 leave the pipelines' defaults (the image's size,
    6.0 / 2.5 by side). A negative without SDXLSizes takes the positive's sizes and crop, as diffusers' negative
    sizes default to the positive's."""
    if conditioning.pooled is None:
        raise NodeInputError("conditioning", "size conditioning is read by SDXL models only; this conditioning has no "
                             "pooled embedding", "a conditioning encoded with an SDXL CLIP", "a single-encoder conditioning")
    values = {"original_width": original_width, "original_height": original_height, "target_width": target_width,
              "target_height": target_height, "aesthetic_score": aesthetic_score}
    sizes = {key: float(value) for key, value in values.items() if value > 0}
    sizes.update(crop_left=float(crop_left), crop_top=float(crop_top))
    return conditioning.replace(sizes={**conditioning.sizes, **sizes})


def wants_added_conditioning(model: Model) -> bool:
    return getattr(model.unet.config, "addition_embed_type", None) == "text_time"


def time_id_count(model: Model, pooled_width: int) -> int:
    """How many ids the UNet's added embedding takes besides the pooled embedding: 6 (base) or 5 (refiner)."""
    config = model.unet.config
    total = int(model.unet.add_embedding.linear_1.in_features)
    count, rest = divmod(total - pooled_width, int(config.addition_time_embed_dim))
    if rest or count not in (5, 6):
        raise NodeInputError("positive", f"the UNet's added embedding takes {total} values, which pooled text "
                             f"{pooled_width} wide plus size ids cannot fill", "a conditioning from this model's CLIP",
                             f"pooled width {pooled_width}")
    return count


def time_ids(sizes: dict[str, float], fallback: dict[str, float], image_size: tuple[int, int], count: int,
             negative: bool) -> list[float]:
    """The ids of one side: its own values, else the positive's (``fallback``), else the pipelines' defaults."""
    height, width = image_size

    def value(key: str, default: float) -> float:
        return sizes.get(key, fallback.get(key, default))

    ids = [value("original_height", height), value("original_width", width), value("crop_top", 0), value("crop_left", 0)]
    if count == 5:
        score = sizes.get("aesthetic_score", NEGATIVE_AESTHETIC if negative else POSITIVE_AESTHETIC)
        return ids + [score]
    return ids + [value("target_height", height), value("target_width", width)]
