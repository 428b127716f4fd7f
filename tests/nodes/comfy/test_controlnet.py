"""comfy.ControlNetLoader / ControlNetApply / ControlNetApplyAdvanced / Canny, and ControlNets in comfy.KSampler.

The end-to-end runs are ComfyUI API prompts through the Engine on the built-in toy-shapes model and its trained
Canny ControlNet: the ControlNet puts the shape on the outline it is given, strength 0 is exactly no ControlNet."""
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from graphflow import Engine, Settings
from graphflow.documents import read_document
from graphflow.errors import NodeFailed, NodeInputError, WorkflowInvalid
from graphflow.registry import default_registry
from nodes.builtin_models import build_tiny_controlnet
from nodes.comfy.conditioning import ConditioningCombine, ConditioningSetArea
from nodes.comfy.controlnet import Canny, ControlNetApply, ControlNetApplyAdvanced
from nodes.comfy.guidance import ComfyDenoiser, _centre_cropped
from nodes.comfy.ksampler import sample_latent
from nodes.preprocessors import Canny as GraphflowCanny
from nodes.values import Conditioning, ControlNet, Image, Latent
from training.measure import foreground_mask

from ..test_parity import encode

ROOT = Path(__file__).resolve().parents[3]
OUTLINE = ROOT / "workflows" / "assets" / "outline_input.png"


def prompt(strength=1.0, control=True, start=0.0, end=1.0, seed=42):
    """ComfyUI's txt2img with Canny → ControlNetApplyAdvanced between the prompts and the KSampler."""
    sampler_inputs = {"seed": seed, "steps": 10, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal",
                      "denoise": 1.0, "model": ["4", 0], "latent_image": ["5", 0],
                      "positive": ["13", 0] if control else ["6", 0], "negative": ["13", 1] if control else ["7", 0]}
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "toy-shapes"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle on a white background", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "10": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "toy-shapes-canny"}},
        "11": {"class_type": "LoadImage", "inputs": {"image": "outline.png"}},
        "12": {"class_type": "Canny", "inputs": {"image": ["11", 0], "low_threshold": 0.4, "high_threshold": 0.8}},
        "13": {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": ["6", 0], "negative": ["7", 0], "control_net": ["10", 0], "image": ["12", 0],
            "strength": strength, "start_percent": start, "end_percent": end}},
        "3": {"class_type": "KSampler", "inputs": sampler_inputs},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
    }


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    root = tmp_path_factory.mktemp("comfy-controlnet")
    (root / "in").mkdir()
    shutil.copy(OUTLINE, root / "in" / "outline.png")
    return Engine(settings=Settings(models_dir=root / "models", input_dir=root / "in", output_dir=root / "out"),
                  check_mutations=True)


def picture(engine, document) -> torch.Tensor:
    return engine.run(read_document(document, "test", default_registry())).values["8"]["IMAGE"].pixels


def overlap_with_outline(pixels: torch.Tensor) -> float:
    """Intersection over union of the picture's shape and the region the outline encloses."""
    from PIL import Image as PILImage

    with PILImage.open(OUTLINE) as outline:
        dark = np.asarray(outline.convert("L").resize((64, 64))) < 128
    region = ndimage.binary_fill_holes(dark)
    shape = foreground_mask((pixels[0].numpy() * 255).astype(np.uint8))
    return float((shape & region).sum() / max(1, (shape | region).sum()))


def test_the_controlnet_puts_the_shape_on_the_outline_and_strength_0_is_exactly_without_it(engine):
    controlled = picture(engine, prompt())
    without = picture(engine, prompt(control=False))
    off = picture(engine, prompt(strength=0.0))
    assert torch.equal(off, without)
    assert (controlled - without).abs().mean() > 0.05
    assert overlap_with_outline(controlled) > 0.6 > 0.4 > overlap_with_outline(without)
    assert torch.equal(picture(engine, prompt(seed=42)), controlled)  # seeds repeat


def test_start_and_end_percent_bound_when_it_acts(engine):
    full, without = picture(engine, prompt()), picture(engine, prompt(control=False))
    late = picture(engine, prompt(start=0.5))
    assert not torch.equal(late, full) and not torch.equal(late, without)


def test_an_end_before_the_start_is_refused_by_comfyuis_node_id(engine):
    with pytest.raises(NodeFailed) as error:
        picture(engine, prompt(start=0.6, end=0.4))
    assert "node 13" in str(error.value) and "ControlNetApplyAdvanced" in str(error.value) and "end_percent" in str(error.value)


def test_a_controlnet_for_another_unet_is_refused_naming_the_side(engine):
    document = prompt()
    document["10"]["inputs"]["control_net_name"] = "tiny-sd-controlnet"
    with pytest.raises(NodeFailed) as error:
        picture(engine, document)
    assert "node 3" in str(error.value) and "another size" in str(error.value) and "positive" in str(error.value)


def test_a_missing_controlnet_file_is_named_before_anything_runs(engine):
    document = prompt()
    document["10"]["inputs"]["control_net_name"] = "no-such-controlnet.safetensors"
    with pytest.raises(WorkflowInvalid) as error:
        engine.validate(read_document(document, "test", default_registry()))
    assert "control_net_name" in str(error.value) and "no-such-controlnet" in str(error.value)


# ---- the nodes on their own ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def control_net():
    return ControlNet(build_tiny_controlnet(), "sd1", "tiny-sd-controlnet")


def cond(value=1.0):
    return Conditioning(embeds=torch.full((1, 77, 32), value))


def edges():
    return Image(pixels=torch.zeros(1, 64, 64, 3))


def test_apply_advanced_puts_one_control_on_every_entry_of_both_sides(control_net):
    positive = ConditioningCombine(conditioning_1=cond(1.0), conditioning_2=cond(2.0))
    pos, neg = ControlNetApplyAdvanced(positive=positive, negative=cond(0.0), control_net=control_net, image=edges(),
                                       strength=0.7, start_percent=0.1, end_percent=0.9)
    [control] = neg.controls
    assert [entry.controls for entry in pos.entries] == [(control,), (control,)]
    assert (control.strength, control.start, control.end, control.guess_mode) == (0.7, 0.1, 0.9, False)
    assert positive.controls == () and positive.also[0].controls == ()  # inputs untouched
    again, _ = ControlNetApplyAdvanced(positive=pos, negative=neg, control_net=control_net, image=edges(),
                                       strength=1.0, start_percent=0.0, end_percent=1.0)
    assert again.controls[0] is control and len(again.also[0].controls) == 2  # chained in order


def test_apply_is_the_positive_only_and_strength_0_returns_the_inputs(control_net):
    positive = cond()
    applied = ControlNetApply(conditioning=positive, control_net=control_net, image=edges(), strength=1.0)
    assert len(applied.controls) == 1 and (applied.controls[0].start, applied.controls[0].end) == (0.0, 1.0)
    assert ControlNetApply(conditioning=positive, control_net=control_net, image=edges(), strength=0.0) is positive
    negative = cond(0.0)
    assert ControlNetApplyAdvanced(positive=positive, negative=negative, control_net=control_net, image=edges(),
                                   strength=0.0, start_percent=0.0, end_percent=1.0) == (positive, negative)


def test_canny_is_kornias_edge_map_in_three_channels_as_comfyui_runs_it():
    from kornia.filters import canny

    square = torch.zeros(1, 32, 32, 3)
    square[:, 8:24, 8:24] = 1.0
    image = Image(pixels=square)
    ours = Canny(image=image, low_threshold=0.4, high_threshold=0.8).pixels
    _, theirs = canny(square.permute(0, 3, 1, 2), 0.4, 0.8)  # ComfyUI: kornia's output[1], repeated to 3 channels
    assert ours.shape == (1, 32, 32, 3) and torch.equal(ours, theirs.repeat(1, 3, 1, 1).movedim(1, -1))
    # the square's outline, within a pixel of its border, and nothing away from it
    edges = ours[0, ..., 0]
    assert set(edges.unique().tolist()) == {0.0, 1.0}
    assert edges[7:25, 7:25].sum() == edges.sum() > 4 * 12
    assert edges[10:22, 10:22].sum() == 0
    with pytest.raises(NodeInputError) as error:
        Canny(image=image, low_threshold=0.9, high_threshold=0.2)
    assert error.value.input == "low_threshold"


def test_comfy_canny_and_graphflows_agree_on_a_clear_edge_not_pixel_for_pixel():
    square = torch.zeros(1, 32, 32, 3)
    square[:, 8:24, 8:24] = 1.0
    ours = Canny(image=Image(pixels=square), low_threshold=0.4, high_threshold=0.8).pixels[0, ..., 0]
    graphflows = GraphflowCanny(image=Image(pixels=square), low_threshold=100, high_threshold=200).pixels[0, ..., 0]
    near = torch.nn.functional.max_pool2d(graphflows[None, None], 3, 1, 1)[0, 0]  # within a pixel of graphflow's
    assert (ours * near).sum() / ours.sum() > 0.9


def test_a_control_image_is_centre_cropped_to_the_latents_shape():
    image = torch.arange(2 * 4 * 8, dtype=torch.float32).reshape(2, 1, 4, 8)
    assert torch.equal(_centre_cropped(image, 1.0), image[:, :, :, 2:6])
    assert torch.equal(_centre_cropped(image, 4.0), image[:, :, 1:3, :])
    assert torch.equal(_centre_cropped(image, 2.0), image)


def test_the_percent_range_is_read_as_noise_levels(sd_model):
    denoiser = ComfyDenoiser(sd_model, cond(), cond(), 5.0)
    assert denoiser.percent_to_sigma(0.0) == math.inf and denoiser.percent_to_sigma(1.0) == 0.0
    sigmas = denoiser.sigmas
    assert denoiser.percent_to_sigma(0.5) == pytest.approx(float(sigmas.sigma(torch.tensor(0.5 * 999))))
    assert denoiser.percent_to_sigma(0.2) > denoiser.percent_to_sigma(0.8)


class Ctx:
    def progress(self, value, maximum):
        pass

    def preview(self, png, step):
        pass


def test_controls_in_ksampler_on_the_tiny_model_any_control_image_size(sd_model, control_net, sd_clip):
    positive, negative = encode(sd_clip, "a red circle"), encode(sd_clip, "")
    latent = Latent(torch.zeros(1, 4, 8, 8))
    base = sample_latent(sd_model, 3, 2, 5.0, "euler", "normal", positive, negative, latent, Ctx()).samples
    wide = Image(pixels=torch.rand(1, 48, 96, 3, generator=torch.Generator().manual_seed(0)))  # not the latent's size
    pos, neg = ControlNetApplyAdvanced(positive=positive, negative=negative, control_net=control_net, image=wide,
                                       strength=1.0, start_percent=0.0, end_percent=1.0)
    steered = sample_latent(sd_model, 3, 2, 5.0, "euler", "normal", pos, neg, latent, Ctx()).samples
    assert torch.isfinite(steered).all() and not torch.allclose(steered, base)
    never, never_neg = ControlNetApplyAdvanced(positive=positive, negative=negative, control_net=control_net,
                                               image=wide, strength=1.0, start_percent=0.3, end_percent=0.7)
    quiet = sample_latent(sd_model, 3, 2, 5.0, "euler", "normal", never, never_neg, latent, Ctx()).samples
    # 2 "normal" steps sample sigma(999) and sigma(0); the range sigma(699) .. sigma(299) holds neither
    assert torch.equal(quiet, base)


def test_an_area_entry_gets_the_control_image_fitted_to_its_crop(sd_model, control_net, sd_clip):
    area = ConditioningSetArea(conditioning=encode(sd_clip, "a cat"), width=32, height=64, x=0, y=0, strength=1.0)
    positive = ConditioningCombine(conditioning_1=encode(sd_clip, "a red circle"), conditioning_2=area)
    pos, neg = ControlNetApplyAdvanced(positive=positive, negative=encode(sd_clip, ""), control_net=control_net,
                                       image=edges(), strength=1.0, start_percent=0.0, end_percent=1.0)
    out = sample_latent(sd_model, 3, 2, 5.0, "euler", "normal", pos, neg, Latent(torch.zeros(1, 4, 8, 8)), Ctx())
    assert out.samples.shape == (1, 4, 8, 8) and torch.isfinite(out.samples).all()
