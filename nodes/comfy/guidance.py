"""ComfyUI's denoiser: the UNet wrapped as a k-diffusion denoiser, with classifier-free guidance and area composition.

For a noise level sigma ComfyUI feeds the UNet ``x / sqrt(sigma² + 1)`` at the training timestep nearest to
sigma and turns its output into a prediction of the clean latent (epsilon: ``x - sigma·eps``; v: ``x/(sigma²+1)
- sigma·v/sqrt(sigma²+1)``). Every conditioning entry is predicted on its own area of the latent (the whole
latent when it has none), weighted by its strength and, where the area does not touch the latent's border, by
a ramp over its outer 8 latent pixels (fewer for areas under 32); each position's prediction is the weighted
mean of the entries covering it. Entries that fit one batch (same area size, prompt lengths whose least common
multiple is at most 4× the shorter: the shorter is repeated) run together, in reverse order. Guidance is then
``uncond + (cond - uncond)·cfg``; at cfg 1 the negative is not run at all.

Before sampling, every positive entry with an area gets a copy of the smallest negative entry that covers it,
confined to the same area, and the other way round (ComfyUI's ``create_cond_with_same_area_if_none``), so
the negative is predicted on the same crops as the positive.

ControlNets (comfy.ControlNetApply / ControlNetApplyAdvanced) ride on the entries: only entries with the same
chain share a batch, and the chain's residuals (nodes/controlnet.py's ``chain_residuals``, as graphflow's Sample
sums them) join the UNet call through ``UNetInputs.predict``, each ControlNet acting while sigma lies in its
start/end range and seeing its control image fitted to the entry's crop. An inpainting UNet also reads each
entry's mask and masked-image channels (nodes/comfy/inpaint.py), cut to the entry's crop. ``with_uncond`` gives
CFG++ samplers the negative's prediction beside the guided one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch

from graphflow.errors import NodeInputError

from ..controlnet import chain_residuals, check_fits
from ..ksigmas import DiscreteSigmas
from ..sdxl import time_id_count, time_ids, wants_added_conditioning
from ..unet_inputs import UNetInputs
from ..values import Conditioning, Control, Model

FEATHER = 8  # latent pixels over which an inner area edge ramps up (ComfyUI's "fuzz")


@dataclass(frozen=True)
class Entry:
    """One conditioning entry as the denoiser uses it: embeddings (P, L, C), area (h, w, y, x) or None, strength."""

    embeds: "torch.Tensor"
    area: tuple[int, int, int, int] | None
    strength: float
    controls: tuple[Control, ...] = ()
    pooled: "torch.Tensor | None" = None  # SDXL: the pooled prompt embedding (P, W) and the size conditioning
    sizes: dict = field(default_factory=dict)
    inpaint_latent: "torch.Tensor | None" = None  # InpaintModelConditioning's, for inpainting UNets
    inpaint_mask: "torch.Tensor | None" = None


def entries_of(conditioning: Conditioning) -> list[Entry]:
    return [Entry(c.embeds, tuple(c.area) if c.area is not None else None, float(c.strength), tuple(c.controls),
                  c.pooled, dict(c.sizes), c.inpaint_latent, c.inpaint_mask) for c in conditioning.entries]


def with_matching_areas(entries: list[Entry], others: list[Entry]) -> list[Entry]:
    """``entries`` plus, for every entry of ``others`` with an area, the smallest entry of ``entries`` covering
    that area (an area-less entry when none does) confined to it — unless that entry already has that area."""
    result = list(entries)
    for other in others:
        if other.area is None:
            continue
        h, w, y, x = other.area
        smallest = None
        for entry in result:
            if entry.area is None:
                smallest = entry if smallest is None else smallest
                continue
            eh, ew, ey, ex = entry.area
            if y >= ey and x >= ex and eh + ey >= h + y and ew + ex >= w + x:
                if smallest is None or smallest.area is None or smallest.area[0] * smallest.area[1] > eh * ew:
                    smallest = entry
        if smallest is None or smallest.area == other.area:
            continue
        result.append(replace(other, embeds=smallest.embeds, controls=smallest.controls, pooled=smallest.pooled,
                              sizes=smallest.sizes, inpaint_latent=smallest.inpaint_latent,
                              inpaint_mask=smallest.inpaint_mask))
    return result


def composed_conditionings(positive: Conditioning, negative: Conditioning) -> tuple[list[Entry], list[Entry]]:
    """Both sides' entries with the same-area copies added, in ComfyUI's order (positive's areas first)."""
    pos, neg = entries_of(positive), entries_of(negative)
    neg = with_matching_areas(neg, pos)
    pos = with_matching_areas(pos, neg)
    return pos, neg


def _clamped_area(entry: Entry, height: int, width: int, name: str) -> tuple[int, int, int, int]:
    if entry.area is None:
        return height, width, 0, 0
    h, w, y, x = entry.area
    h, w = min(height - y, h), min(width - x, w)
    if h <= 0 or w <= 0:
        raise NodeInputError(name, "a conditioning area lies outside the latent", f"an area inside {width * 8}×{height * 8}",
                             f"x={x * 8}, y={y * 8}")
    return h, w, y, x


def area_weights(area: tuple[int, int, int, int], height: int, width: int, strength: float, shape) -> "torch.Tensor":
    """The weight of an entry's prediction over its (clamped) area: strength, times a linear ramp 1/rr ... rr/rr
    over the first/last rr = min(8, size // 4) rows and columns of every edge that is not the latent's edge."""
    h, w, y, x = area
    mult = torch.ones(shape) * strength
    for dim, (size, offset, full) in enumerate(((h, y, height), (w, x, width)), start=2):
        rr = min(FEATHER, mult.shape[dim] // 4)
        if offset != 0:
            for t in range(rr):
                mult.narrow(dim, t, 1).mul_((1.0 / rr) * (t + 1))
        if size + offset < full:
            for t in range(rr):
                mult.narrow(dim, size - 1 - t, 1).mul_((1.0 / rr) * (t + 1))
    return mult


def _to_batch(embeds: "torch.Tensor", batch: int) -> "torch.Tensor":
    """ComfyUI's repeat_to_batch_size: cut, or repeat and cut, to ``batch`` rows."""
    if embeds.shape[0] > batch:
        return embeds[:batch]
    if embeds.shape[0] < batch:
        return embeds.repeat([math.ceil(batch / embeds.shape[0])] + [1] * (embeds.ndim - 1))[:batch]
    return embeds


def _fits_with(a: "torch.Tensor", b: "torch.Tensor") -> bool:
    """Whether two prompts' embeddings can share a batch (the shorter repeated up to the lcm, at most 4×)."""
    if a.shape == b.shape:
        return True
    if a.shape[0] != b.shape[0] or a.shape[2] != b.shape[2]:
        return False
    return math.lcm(a.shape[1], b.shape[1]) // min(a.shape[1], b.shape[1]) <= 4


def _same_controls(a: tuple[Control, ...], b: tuple[Control, ...]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))


def _centre_cropped(image: "torch.Tensor", aspect: float) -> "torch.Tensor":
    """(B, C, H, W) cut at the centre to width/height ``aspect`` (ComfyUI's "center" crop before a resize)."""
    height, width = int(image.shape[2]), int(image.shape[3])
    if width / height > aspect:
        keep = round(height * aspect)
        left = (width - keep) // 2
        return image[:, :, :, left:left + keep]
    if width / height < aspect:
        keep = round(width / aspect)
        top = (height - keep) // 2
        return image[:, :, top:top + keep, :]
    return image


def _concat_prompts(prompts: list["torch.Tensor"]) -> "torch.Tensor":
    length = 1
    for p in prompts:
        length = math.lcm(length, p.shape[1])
    return torch.cat([p.repeat(1, length // p.shape[1], 1) if p.shape[1] < length else p for p in prompts])


class ComfyDenoiser:
    """``denoiser(x, sigma) -> x0`` for a MODEL with ComfyUI's guidance (see the module docstring)."""

    def __init__(self, model: Model, positive: Conditioning, negative: Conditioning, cfg: float, inpaint=None):
        """``inpaint`` (nodes/comfy/inpaint.py's InpaintConcat): for an inpainting UNet, the latent's mask and
        masked-image latents, which every entry reads unless it carries its own."""
        self.model = model
        self.inpaint = inpaint
        latent_channels = int(model.in_channels) - (int(inpaint.samples.shape[1]) + 1 if inpaint is not None else 0)
        self.sigmas = DiscreteSigmas.from_config(model.scheduler_config)
        self.v_prediction = model.prediction_type == "v_prediction"
        self.cfg = cfg
        self.hints: dict = {}
        self.concats: dict = {}
        for name, conditioning in (("positive", positive), ("negative", negative)):
            for entry in conditioning.entries:
                for control in entry.controls:
                    check_fits(model, control.control_net, latent_channels, name)
                if entry.adapters:  # graphflow's ApplyT2IAdapter: its features are fed by graphflow's Sample only
                    raise NodeInputError(name, "comfy.KSampler does not apply T2I-Adapters attached with ApplyT2IAdapter",
                                         "a conditioning without T2I-Adapters, or graphflow's Sample",
                                         f"{len(entry.adapters)} T2I-Adapter(s)")
        self.sdxl = wants_added_conditioning(model)
        if self.sdxl:
            for name, conditioning in (("positive", positive), ("negative", negative)):
                if any(entry.pooled is None for entry in conditioning.entries):
                    raise NodeInputError(name, "this SDXL UNet needs a pooled prompt embedding; encode with an SDXL CLIP",
                                         "a conditioning from an SDXL CLIP", "a conditioning without one")
        pos, neg = composed_conditionings(positive, negative)
        self.both = [pos, neg]
        self.conds = [pos, None if math.isclose(cfg, 1.0) else neg]

    def apply_model(self, x: "torch.Tensor", sigma: "torch.Tensor", context: "torch.Tensor",
                    controls: tuple[Control, ...] = (), rows: int = 1,
                    added: "dict[str, torch.Tensor] | None" = None,
                    concat: "torch.Tensor | None" = None) -> "torch.Tensor":
        """The model's clean-latent prediction for x (float32) at sigma (B,): ``rows`` entries' crops stacked, all
        steered by the ControlNets ``controls`` (ComfyUI batches only entries with the same ControlNets).
        ``concat``: an inpainting UNet's mask and masked-image channels for those crops, joined to the scaled
        input after the ControlNets have seen it (as ComfyUI's apply_model joins c_concat)."""
        s = sigma.reshape(-1, 1, 1, 1)
        model_input = x / (s ** 2 + 1.0) ** 0.5
        timestep = self.sigmas.timestep(sigma.cpu()).float().to(x.device)
        dtype = self.model.dtype
        if added is not None:
            added = {key: value.to(x.device, dtype) for key, value in added.items()}
        unet_input = UNetInputs(context.to(x.device, dtype), added)
        with torch.no_grad():
            extra = self.control_kwargs(controls, model_input.to(dtype), timestep, unet_input.encoder_hidden_states,
                                        float(sigma[0]), rows, added)
            unet_sample = model_input if concat is None else torch.cat([model_input, concat.to(model_input)], dim=1)
            output = unet_input.predict(self.model.unet, unet_sample.to(dtype), timestep, 0, 1, **extra).float()
        if self.v_prediction:
            return x * 1.0 / (s ** 2 + 1.0) - output * s * 1.0 / (s ** 2 + 1.0) ** 0.5
        return x - output * s

    def control_kwargs(self, controls: tuple[Control, ...], model_input: "torch.Tensor", timestep: "torch.Tensor",
                       context: "torch.Tensor", sigma: float, rows: int,
                       added: "dict[str, torch.Tensor] | None" = None) -> dict:
        """The UNet's ControlNet residual inputs: each ControlNet acts while sigma lies in the sigma range of its
        start_percent .. end_percent (ComfyUI's percent_to_sigma), its control image fitted to the crop; an SDXL
        ControlNet gets the UNet's ``added`` conditioning, as ComfyUI gives it the model's ``y``."""
        if not controls:
            return {}
        batch, height, width = model_input.shape[0] // rows, *model_input.shape[-2:]
        chain = [(c, self.hint(c, batch, int(height), int(width))) for c in controls]

        def acts(control: Control) -> bool:
            return self.percent_to_sigma(control.end) <= sigma <= self.percent_to_sigma(control.start)

        total = chain_residuals(chain, model_input, timestep, context, acts, model_input.device, model_input.dtype,
                                repeats=rows, added=added)
        if total is None:
            return {}
        return {"down_block_additional_residuals": total[0], "mid_block_additional_residual": total[1]}

    def percent_to_sigma(self, percent: float) -> float:
        """ComfyUI's percent_to_sigma: 0 → above any sigma, 1 → 0, else the sigma of timestep (1 - p)·(T - 1)."""
        if percent <= 0.0:
            return math.inf
        if percent >= 1.0:
            return 0.0
        last = len(self.sigmas.sigmas) - 1
        return float(self.sigmas.sigma(torch.tensor((1.0 - percent) * last)))

    def hint(self, control: Control, batch: int, height: int, width: int) -> "torch.Tensor":
        """The control image for a (batch, ·, height, width) latent crop, as ComfyUI fits it: centre-cropped to the
        crop's aspect ratio, resized (nearest-exact) to its pixel size, repeated (or cut) to the batch."""
        key = (id(control), batch, height, width)
        if key not in self.hints:
            net = control.control_net
            size = (height * net.downscale, width * net.downscale)
            image = control.image.permute(0, 3, 1, 2).float()
            if tuple(image.shape[-2:]) != size:
                image = _centre_cropped(image, size[1] / size[0])
                image = torch.nn.functional.interpolate(image, size=size, mode="nearest-exact")
            weight = next(net.module.parameters())
            self.hints[key] = _to_batch(image, batch).to(weight.device, weight.dtype)
        return self.hints[key]

    def added_conditioning(self, batch: list, x: "torch.Tensor") -> "dict[str, torch.Tensor] | None":
        """SDXL's added conditioning for a batch of entries: each entry's pooled embedding and size ids, repeated
        over the latent batch. As in ComfyUI the sizes default to the whole latent's pixel size (8 per latent
        pixel), the crop to 0, the refiner's aesthetic score to 6 (positive) / 2.5 (negative); a negative does not
        take the positive's sizes."""
        if not self.sdxl:
            return None
        rows = int(x.shape[0])
        image_size = (int(x.shape[2]) * 8, int(x.shape[3]) * 8)
        pooled, ids = [], []
        for side, *_, entry in batch:
            count = time_id_count(self.model, int(entry.pooled.shape[-1]))
            pooled.append(_to_batch(entry.pooled.float(), rows))
            ids.append(torch.tensor([time_ids(entry.sizes, {}, image_size, count, side == 1)]).repeat(rows, 1))
        return {"text_embeds": torch.cat(pooled), "time_ids": torch.cat(ids)}

    def concat(self, batch: list) -> "torch.Tensor | None":
        """An inpainting UNet's extra channels for a batch of entries, each cut to its entry's area (ComfyUI
        crops c_concat with the latent); None for other UNets."""
        if self.inpaint is None:
            return None
        crops = []
        for _side, (h, w, top, left), *_, entry in batch:
            if id(entry) not in self.concats:  # the same at every step (entries live as long as the denoiser)
                self.concats[id(entry)] = self.inpaint.for_entry(entry)
            crops.append(self.concats[id(entry)][:, :, top:top + h, left:left + w])
        return torch.cat(crops)

    def predictions(self, x: "torch.Tensor", sigma: "torch.Tensor", conds: list | None = None) -> list["torch.Tensor | None"]:
        """Each side's area-composed prediction (None for a side not run); ``conds``: the sides' entries (default:
        the negative left out at cfg 1)."""
        conds = self.conds if conds is None else conds
        height, width = int(x.shape[2]), int(x.shape[3])
        sums = [torch.zeros_like(x) if c is not None else None for c in conds]
        counts = [torch.ones_like(x) * 1e-37 if c is not None else None for c in conds]
        pending = []
        for side, entries in enumerate(conds):
            for entry in entries or ():
                area = _clamped_area(entry, height, width, "positive" if side == 0 else "negative")
                h, w, top, left = area
                crop = x[:, :, top:top + h, left:left + w]
                weights = area_weights(area, height, width, entry.strength, crop.shape).to(x.device)
                pending.append((side, area, crop, weights, _to_batch(entry.embeds, x.shape[0]), entry.controls, entry))
        while pending:
            first = pending[0]
            group = [i for i, p in enumerate(pending) if p[2].shape == first[2].shape and _fits_with(p[4], first[4])
                     and _same_controls(p[5], first[5])]
            batch = [pending.pop(i) for i in reversed(group)]
            outputs = self.apply_model(torch.cat([b[2] for b in batch]), torch.cat([sigma] * len(batch)),
                                       _concat_prompts([b[4] for b in batch]), batch[0][5], len(batch),
                                       self.added_conditioning(batch, x), self.concat(batch)).chunk(len(batch))
            for (side, (h, w, top, left), _, weights, _, _, _), output in zip(batch, outputs):
                sums[side][:, :, top:top + h, left:left + w] += output * weights
                counts[side][:, :, top:top + h, left:left + w] += weights
        return [s / c if s is not None else None for s, c in zip(sums, counts)]

    def __call__(self, x: "torch.Tensor", sigma: "torch.Tensor") -> "torch.Tensor":
        cond, uncond = self.predictions(x, sigma)
        if uncond is None:
            return cond
        return uncond + (cond - uncond) * self.cfg

    def with_uncond(self, x: "torch.Tensor", sigma: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
        """(the guided prediction, the negative's): what CFG++ samplers read; the negative runs even at cfg 1."""
        cond, uncond = self.predictions(x, sigma, self.both)
        return uncond + (cond - uncond) * self.cfg, uncond


class InpaintDenoiser:
    """Keeps the unmasked part of ``latent`` (noise_mask 0) at every step, as ComfyUI's KSamplerX0Inpaint: the
    input outside the mask is the latent noised to sigma with ``noise``, the prediction outside it the latent."""

    def __init__(self, inner, latent: "torch.Tensor", noise: "torch.Tensor", mask: "torch.Tensor"):
        self.inner, self.latent, self.noise, self.mask = inner, latent, noise, mask

    def __call__(self, x: "torch.Tensor", sigma: "torch.Tensor") -> "torch.Tensor":
        return self.with_uncond(x, sigma, both=False)[0]

    def with_uncond(self, x: "torch.Tensor", sigma: "torch.Tensor", both: bool = True):
        """The kept latent outside the mask in the input and the guided prediction; the negative's prediction
        (``both``) as the inner denoiser made it, as ComfyUI's post-CFG hook sees it inside KSamplerX0Inpaint."""
        keep = 1.0 - self.mask
        x = x * self.mask + (self.latent + self.noise * sigma.reshape(-1, 1, 1, 1)) * keep
        out, uncond = self.inner.with_uncond(x, sigma) if both else (self.inner(x, sigma), None)
        return out * self.mask + self.latent * keep, uncond
