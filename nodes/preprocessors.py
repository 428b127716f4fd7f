"""Control images from pictures: Canny edges, and the resize that fits a control image to a latent.

Canny follows OpenCV's ``cv2.Canny(image, low, high)`` as lllyasviel's ControlNet annotator calls it (thresholds in
8-bit grey levels, 3×3 Sobel gradients, |dx| + |dy| magnitude, non-maximum suppression across the gradient's
direction in four sectors, hysteresis over 8-connected pixels), written here on numpy and scipy so that no
image-processing library is needed. It works on the picture's luminance (Rec. 601) rather than per colour channel.
"""
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from graphflow.context import RunContext
from graphflow.errors import NodeInputError
from graphflow.node import Input, node

from .image import ImageScale, ScaleMethod
from .mask import luminance
from .t2i_adapter import control_image_factor
from .values import CONTROL_NET, IMAGE, LATENT, T2I_ADAPTER, ControlNet, Image, Latent, T2IAdapter

ResizeMode = Literal["crop", "stretch", "pad"]
TAN_22_5 = np.tan(np.pi / 8)  # the sector borders of the gradient direction, as OpenCV's Canny draws them
TAN_67_5 = np.tan(3 * np.pi / 8)


@node(outputs={"image": IMAGE}, category="controlnet")
def Canny(
    image: Image = Input(IMAGE),
    low_threshold: int = Field(100, ge=0, le=1020, description="gradient (8-bit grey levels) below which nothing is an edge"),
    high_threshold: int = Field(200, ge=0, le=1020, description="gradient above which a pixel is surely an edge; weaker "
                                "ones above low_threshold count where they touch one"),
) -> Image:
    """White edges on black, the control image of Canny ControlNets (lllyasviel's annotator uses 100 / 200)."""
    if low_threshold > high_threshold:
        raise NodeInputError("low_threshold", "must not be above high_threshold", f"at most {high_threshold}", low_threshold)
    grey = (luminance(image.pixels.detach().cpu().float())[..., 0].clamp(0, 1) * 255).round().numpy()
    edges = np.stack([canny_edges(frame, low_threshold, high_threshold) for frame in grey])
    pixels = torch.from_numpy(edges.astype(np.float32))[..., None].expand(-1, -1, -1, 3).contiguous()
    return Image(pixels=pixels.to(image.pixels.device))


def canny_edges(grey: np.ndarray, low: float, high: float) -> np.ndarray:
    """A boolean edge map of one (H, W) picture in grey levels 0–255."""
    from scipy import ndimage  # not at import: scipy looks for torch, and must not meet the lazy stand-in (nodes/__init__.py)

    dx = ndimage.sobel(grey, axis=1, mode="nearest")
    dy = ndimage.sobel(grey, axis=0, mode="nearest")
    magnitude = np.abs(dx) + np.abs(dy)
    padded = np.pad(magnitude, 1)

    def neighbour(row: int, column: int) -> np.ndarray:  # the magnitude one pixel away, zero outside the picture
        h, w = magnitude.shape
        return padded[1 + row:1 + row + h, 1 + column:1 + column + w]

    ax, ay = np.abs(dx), np.abs(dy)
    horizontal = ay <= ax * TAN_22_5  # gradient along x: compare left and right
    vertical = ay > ax * TAN_67_5
    rising = ~horizontal & ~vertical & (dx * dy > 0)  # y grows with x (image rows go down)
    falling = ~horizontal & ~vertical & ~rising
    # A maximum is strictly above one neighbour and at least the other, so a plateau two pixels wide keeps one.
    peak = np.zeros_like(horizontal)
    for sector, (a, b) in ((horizontal, ((0, -1), (0, 1))), (vertical, ((-1, 0), (1, 0))),
                           (rising, ((-1, -1), (1, 1))), (falling, ((-1, 1), (1, -1)))):
        peak |= sector & (magnitude > neighbour(*a)) & (magnitude >= neighbour(*b))
    candidates = peak & (magnitude > low)
    strong = peak & (magnitude > high)
    labels, count = ndimage.label(candidates, structure=np.ones((3, 3)))
    keep = np.zeros(count + 1, dtype=bool)
    keep[np.unique(labels[strong])] = True
    keep[0] = False
    return keep[labels]


@node(outputs={"image": IMAGE}, category="controlnet")
def ControlImageResize(
    image: Image = Input(IMAGE),
    latent: Latent = Input(LATENT, description="the latent the control image will steer"),
    control_net: ControlNet | None = Input(CONTROL_NET, optional=True, description="gives the factor between latent and control image"),
    resize_mode: ResizeMode = Field("crop", description="crop: fill the size and cut the overflow (centred); stretch: "
                                    "fill it, ignoring the aspect ratio; pad: fit inside it, black around"),
    method: ScaleMethod = "lanczos",
    t2i_adapter: T2IAdapter | None = Input(T2I_ADAPTER, optional=True, description="gives the factor instead of a ControlNet"),
    *,
    ctx: RunContext,
) -> Image:
    """Resize a control image to the latent's pixel size, as ApplyControlNet and ApplyT2IAdapter need it.

    The size is the latent's times the factor of the ControlNet or T2I-Adapter connected (one of them; 8 at full
    size); an image already that size is passed on unchanged."""
    if (control_net is None) == (t2i_adapter is None):
        raise NodeInputError("control_net", "connect a ControlNet or a T2I-Adapter (t2i_adapter): its factor sets the size",
                             "one of control_net, t2i_adapter", "both" if control_net is not None else "neither")
    factor = control_net.downscale if control_net is not None else control_image_factor(t2i_adapter)
    height, width = (int(s) * factor for s in latent.samples.shape[-2:])
    if (image.height, image.width) == (height, width):
        return image
    if resize_mode == "stretch":
        return ImageScale(image=image, method=method, width=width, height=height, scale_by=1.0, ctx=ctx)
    cover = max if resize_mode == "crop" else min
    scale = cover(width / image.width, height / image.height)
    scaled_w, scaled_h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    scaled = ImageScale(image=image, method=method, width=scaled_w, height=scaled_h, scale_by=1.0, ctx=ctx).pixels
    if resize_mode == "crop":
        top, left = (scaled_h - height) // 2, (scaled_w - width) // 2
        return Image(pixels=scaled[:, top:top + height, left:left + width].contiguous())
    canvas = torch.zeros(image.batch_size, height, width, 3, dtype=scaled.dtype)
    top, left = (height - scaled_h) // 2, (width - scaled_w) // 2
    canvas[:, top:top + scaled_h, left:left + scaled_w] = scaled
    return Image(pixels=canvas)
