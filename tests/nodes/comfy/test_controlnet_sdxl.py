"""comfy.ControlNetApply / ControlNetApplyAdvanced with an SDXL ControlNet on an SDXL model (tiny-sdxl and the
built-in tiny-sdxl-controlnet): the ControlNet gets the pooled text and size ids the UNet gets, row for row."""
import shutil

import pytest
import torch

from graphflow import Engine, Settings
from graphflow.errors import NodeFailed
from nodes.builtin_sdxl import build_tiny_sdxl_components, build_tiny_sdxl_controlnet
from nodes.comfy.controlnet import ControlNetApply, ControlNetApplyAdvanced
from nodes.comfy.ksampler import sample_latent
from nodes.values import ControlNet, Image, Latent

from ..runctx import run_node
from ..test_sdxl import values_of
from .test_controlnet import OUTLINE, Ctx


def link(node, output):
    return {"from": node, "output": output}


def workflow(strength=1.0, control_net="tiny-sdxl-controlnet", checkpoint="tiny-sdxl"):
    """ComfyUI's SDXL txt2img with ControlNetApplyAdvanced (prompts from graphflow's TextEncode, mixed in)."""
    return {"graphflow": 1, "nodes": {
        "4": {"type": "comfy.CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "6": {"type": "TextEncode", "inputs": {"text": "a red circle", "clip": link("4", "CLIP")}},
        "7": {"type": "TextEncode", "inputs": {"text": "blurry", "clip": link("4", "CLIP")}},
        "5": {"type": "comfy.EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "10": {"type": "comfy.ControlNetLoader", "inputs": {"control_net_name": control_net}},
        "11": {"type": "LoadImage", "inputs": {"name": "outline.png"}},
        "13": {"type": "comfy.ControlNetApplyAdvanced", "inputs": {
            "positive": link("6", "conditioning"), "negative": link("7", "conditioning"),
            "control_net": link("10", "CONTROL_NET"), "image": link("11", "image"), "strength": strength,
            "start_percent": 0.0, "end_percent": 1.0}},
        "3": {"type": "comfy.KSampler", "inputs": {
            "seed": 1, "steps": 3, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            "model": link("4", "MODEL"), "positive": link("13", "positive"), "negative": link("13", "negative"),
            "latent_image": link("5", "LATENT")}},
        "8": {"type": "comfy.VAEDecode", "inputs": {"samples": link("3", "LATENT"), "vae": link("4", "VAE")}},
        "9": {"type": "comfy.PreviewImage", "inputs": {"images": link("8", "IMAGE")}},
    }}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    root = tmp_path_factory.mktemp("comfy-sdxl-controlnet")
    (root / "in").mkdir()
    shutil.copy(OUTLINE, root / "in" / "outline.png")
    return Engine(settings=Settings(models_dir=root / "models", input_dir=root / "in", output_dir=root / "out"),
                  check_mutations=True)


def latent(engine, document):
    return engine.run(document).values["3"]["LATENT"].samples


def test_an_sdxl_controlnet_steers_comfy_ksampler_and_strength_0_is_without_it(engine):
    steered, off = latent(engine, workflow()), latent(engine, workflow(strength=0.0))
    without = workflow()
    without["nodes"]["3"]["inputs"].update(positive=link("6", "conditioning"), negative=link("7", "conditioning"))
    assert torch.equal(off, latent(engine, without))
    assert torch.isfinite(steered).all() and (steered - off).abs().max() > 1e-2


def test_an_sdxl_controlnet_on_an_sd_model_is_refused_naming_the_side(engine):
    with pytest.raises(NodeFailed) as error:
        latent(engine, workflow(checkpoint="tiny-sd"))
    assert "node 3" in str(error.value) and "is for sdxl models" in str(error.value) and "positive" in str(error.value)


def test_the_controlnet_gets_the_added_conditioning_the_unet_gets():
    """Spies on both modules: every ControlNet call sees the pooled text and size ids of its UNet call's rows."""
    parts = build_tiny_sdxl_components()
    model, clip, _ = values_of(parts)
    net = build_tiny_sdxl_controlnet(parts)
    calls = []  # (module name, its added conditioning), in call order

    def spy(name):
        def hook(module, args, kwargs):
            calls.append((name, {k: v.clone() for k, v in kwargs["added_cond_kwargs"].items()}))
        return hook

    handles = [parts["unet"].register_forward_pre_hook(spy("unet"), with_kwargs=True),
               net.register_forward_pre_hook(spy("controlnet"), with_kwargs=True)]
    try:
        from nodes.text import TextEncode

        positive = run_node(TextEncode, clip=clip, text="a red circle")
        negative = run_node(TextEncode, clip=clip, text="blurry")
        control_net = ControlNet(module=net, family="sdxl", name="tiny-sdxl-controlnet")
        image = Image(pixels=torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(0)))
        pos, neg = ControlNetApplyAdvanced(positive=positive, negative=negative, control_net=control_net, image=image,
                                           strength=1.0, start_percent=0.0, end_percent=1.0)
        sample_latent(model, 3, 2, 5.0, "euler", "normal", pos, neg, Latent(torch.zeros(1, 4, 8, 8)), Ctx())
        only_positive = ControlNetApply(conditioning=positive, control_net=control_net, image=image, strength=1.0)
        sample_latent(model, 3, 2, 5.0, "euler", "normal", only_positive, negative, Latent(torch.zeros(1, 4, 8, 8)), Ctx())
    finally:
        for handle in handles:
            handle.remove()
    # 2 steps: both sides in one batch with the ControlNet, then the positive's batch with it, the negative's without
    assert [name for name, _ in calls] == ["controlnet", "unet"] * 2 + ["controlnet", "unet", "unet"] * 2
    for (name, control_call), (_, unet_call) in zip(calls, calls[1:]):
        if name == "controlnet":  # the UNet call right after it is the one its residuals join
            assert all(torch.equal(control_call[k], unet_call[k]) for k in ("text_embeds", "time_ids"))
            assert control_call["time_ids"].shape[0] in (1, 2)
