"""sdxl_controlnet.json runs as shipped on the built-in tiny-sdxl and tiny-sdxl-controlnet and gives diffusers'
StableDiffusionXLControlNetPipeline's pixels; the ControlNet changes the picture, and at strength 0 the workflow is
the same seed's txt2img without it. Random weights draw noise: what it promises is the pipeline's result."""
import json

import torch

from nodes.builtin_sdxl import build_tiny_sdxl_components, build_tiny_sdxl_controlnet
from tests.nodes.stage_helpers import channels_last
from tests.workflows.conftest import WORKFLOWS

COVERS = {"sdxl_controlnet.json"}
NAME = "sdxl_controlnet.json"
PROMPT, STEPS, CFG = "a red circle on a white background", 10, 5.0


def pixels(report):
    return report.values["decode"]["image"].pixels


def test_sdxl_controlnet_is_the_sdxl_controlnet_pipeline(shipped):
    from diffusers import StableDiffusionXLControlNetPipeline

    report = shipped.report(NAME)
    control_image = report.values["fit"]["image"].pixels  # the outline's Canny edges at the latent's pixel size
    parts = build_tiny_sdxl_components()
    pipe = StableDiffusionXLControlNetPipeline(**parts, controlnet=build_tiny_sdxl_controlnet(parts),
                                               force_zeros_for_empty_prompt=True, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    size = int(control_image.shape[1])
    theirs = pipe(PROMPT, image=control_image.permute(0, 3, 1, 2), height=size, width=size,
                  num_inference_steps=STEPS, guidance_scale=CFG, controlnet_conditioning_scale=1.0,
                  generator=torch.Generator("cpu").manual_seed(42), output_type="pt").images
    ours = pixels(report)
    assert ours.shape == (1, size, size, 3) and ours.std() > 0.01
    assert control_image.amax() == 1.0 and control_image.mean() < 0.2  # an edge map: thin white lines on black
    assert (ours - channels_last(theirs)).abs().max() <= 1e-5


def test_the_controlnet_changes_the_picture_and_strength_0_is_without_it(shipped):
    document = json.loads((WORKFLOWS / NAME).read_text())
    document["nodes"]["control"]["inputs"]["strength"] = 0.0
    off = pixels(shipped.engine.run(document))
    without = json.loads((WORKFLOWS / NAME).read_text())
    sample = without["nodes"]["sample"]["inputs"]
    sample["positive"], sample["negative"] = ({"from": side, "output": "conditioning"} for side in ("positive", "negative"))
    for unused in ("controlnet", "image", "edges", "fit", "control"):
        del without["nodes"][unused]
    assert torch.equal(off, pixels(shipped.engine.run(without)))
    assert (pixels(shipped.report(NAME)) - off).abs().max() > 0.05
