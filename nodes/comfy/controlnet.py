"""ComfyUI's ControlNet nodes: ControlNetLoader, ControlNetApply, ControlNetApplyAdvanced, Canny.

They are graphflow's LoadControlNet, ApplyControlNet and Canny under ComfyUI's names; comfy.KSampler runs the
ControlNets (nodes/comfy/guidance.py) as ComfyUI does: on every conditioning entry that carries them, with the
control image centre-cropped and resized (nearest-exact) to the latent, and start_percent / end_percent read as
ComfyUI reads them, as noise levels (a ControlNet acts while sigma lies between the sigmas of the model's
timesteps at (1 - start)·999 and (1 - end)·999), not as shares of the steps as graphflow's Sample does. SDXL
ControlNets on an SDXL model get the pooled text and size ids the UNet gets (ComfyUI's ``y``)."""
from __future__ import annotations

from pydantic import Field

from graphflow.context import RunContext
from graphflow.errors import NodeInputError
from graphflow.node import Input, node

from ..controlnet import ApplyControlNet, LoadControlNet
from ..values import CONDITIONING, CONTROL_NET, IMAGE, VAE, Conditioning, Control, ControlNet, Image, Vae
from .delegate import Renamed

_loader = Renamed(LoadControlNet, {"control_net_name": "name"}, file_inputs=("control_net_name",))
STRENGTH = Field(1.0, ge=0.0, le=10.0, description="scale of the ControlNet's residuals; 0 = the conditioning unchanged")


@node(name="comfy.ControlNetLoader", outputs={"CONTROL_NET": CONTROL_NET}, category="comfy/loaders", pool="model",
      fingerprint=_loader.fingerprint, preflight=_loader.preflight)
def ControlNetLoader(
    control_net_name: str = Field(description="a ControlNet in models/controlnet/ (built-in: tiny-sd-controlnet, "
                                  "tiny-sdxl-controlnet, toy-shapes-canny)"),
    *,
    ctx: RunContext,
) -> ControlNet:
    """ComfyUI's Load ControlNet Model: LoadControlNet with its defaults."""
    return _loader(ctx, control_net_name=control_net_name)


def _with_control(conditioning: Conditioning, control: Control) -> Conditioning:
    """Every entry of a conditioning with ``control`` appended to its ControlNets (ComfyUI chains per entry)."""
    first, *rest = [entry.replace(controls=entry.controls + (control,)) for entry in conditioning.entries]
    return first.replace(also=tuple(rest))


def _applied(positive: Conditioning, negative: Conditioning | None, control_net: ControlNet, image: Image,
             strength: float, start_percent: float, end_percent: float) -> tuple[Conditioning, Conditioning | None]:
    """graphflow's ApplyControlNet makes the Control (its checks, its guess-mode rule); the same Control then goes
    on every entry of both sides, so entries of positive and negative still share one batch, as in ComfyUI."""
    head_pos, head_neg = positive.entries[0], (negative if negative is not None else positive).entries[0]
    pos, neg = ApplyControlNet(positive=head_pos, negative=head_neg, control_net=control_net, image=image,
                               strength=strength, start_percent=start_percent, end_percent=end_percent, guess_mode=False)
    control = pos.controls[-1]
    on_negative = negative is not None and neg.controls[-1:] == (control,)
    return _with_control(positive, control), _with_control(negative, control) if on_negative else negative


@node(name="comfy.ControlNetApply", outputs={"CONDITIONING": CONDITIONING}, category="comfy/conditioning")
def ControlNetApply(
    conditioning: Conditioning = Input(CONDITIONING),
    control_net: ControlNet = Input(CONTROL_NET),
    image: Image = Input(IMAGE, description="the control image; comfy.KSampler fits it to the latent"),
    strength: float = STRENGTH,
) -> Conditioning:
    """ComfyUI's Apply ControlNet (old): the ControlNet on one conditioning (the positive), over every step."""
    if strength == 0:
        return conditioning
    return _applied(conditioning, None, control_net, image, strength, 0.0, 1.0)[0]


@node(name="comfy.ControlNetApplyAdvanced", outputs={"positive": CONDITIONING, "negative": CONDITIONING},
      category="comfy/conditioning")
def ControlNetApplyAdvanced(
    positive: Conditioning = Input(CONDITIONING),
    negative: Conditioning = Input(CONDITIONING),
    control_net: ControlNet = Input(CONTROL_NET),
    image: Image = Input(IMAGE, description="the control image; comfy.KSampler fits it to the latent"),
    strength: float = STRENGTH,
    start_percent: float = Field(0.0, ge=0.0, le=1.0, description="where in the noise levels it starts acting (0 = from the first)"),
    end_percent: float = Field(1.0, ge=0.0, le=1.0, description="where it stops (1 = to the last)"),
    vae: Vae | None = Input(VAE, optional=True, description="ComfyUI's, for ControlNets that read latents; the "
                            "ControlNets graphflow loads read pixels, so it is not used"),
) -> tuple[Conditioning, Conditioning]:
    """ComfyUI's Apply ControlNet: the ControlNet on positive and negative, between start_percent and end_percent."""
    if strength == 0:
        return positive, negative
    return _applied(positive, negative, control_net, image, strength, start_percent, end_percent)


@node(name="comfy.Canny", outputs={"IMAGE": IMAGE}, category="comfy/image")
def Canny(
    image: Image = Input(IMAGE),
    low_threshold: float = Field(0.4, ge=0.01, le=0.99, description="gradient magnitude (of the 0–1 grey picture, "
                                 "after a sigma-1 blur) below which nothing is an edge"),
    high_threshold: float = Field(0.8, ge=0.01, le=0.99, description="gradient magnitude above which a pixel surely is an edge"),
) -> Image:
    """ComfyUI's Canny: the edges of kornia's Canny detector, which ComfyUI runs, white on black in three channels.

    kornia greys the picture, blurs it (Gaussian, 5×5, sigma 1), takes the Sobel gradient's length √(dx² + dy²),
    thins it and keeps weak edges that touch strong ones: the same control image as ComfyUI's, where graphflow's own
    Canny follows OpenCV (no blur, |dx| + |dy|, thresholds in grey levels)."""
    from kornia.filters import canny

    if low_threshold > high_threshold:
        raise NodeInputError("low_threshold", "must not be above high_threshold", f"at most {high_threshold}", low_threshold)
    pixels = image.pixels.float().clamp(0, 1)
    _, edges = canny(pixels[..., :3].permute(0, 3, 1, 2), low_threshold, high_threshold)
    return Image(pixels=edges.expand(-1, 3, -1, -1).permute(0, 2, 3, 1).contiguous().to(image.pixels.dtype))
