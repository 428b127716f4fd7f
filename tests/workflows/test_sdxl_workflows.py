"""The SDXL examples (sdxl_txt2img.json, sdxl_refiner.json) run as shipped, at SDXL's 1024x1024, on the built-in tiny
SDXL models and give diffusers' SDXL pipelines' pixels (whose default size for these models is 1024 too). Random
weights draw noise, so what they promise is the pipelines' result and the split of the steps, not a picture."""
import pytest
import torch

from nodes.builtin_sdxl import build_tiny_sdxl_components, sdxl_pipeline
from tests.nodes.stage_helpers import channels_last

COVERS = {"sdxl_txt2img.json", "sdxl_refiner.json"}
PROMPT, SIZE, STEPS, CFG = "a red circle on a white background", 1024, 10, 5.0  # SDXL's own size


@pytest.fixture(scope="module")
def pipelines():
    base, refiner = sdxl_pipeline(build_tiny_sdxl_components()), sdxl_pipeline(build_tiny_sdxl_components(refiner=True))
    for pipe in (base, refiner):
        pipe.set_progress_bar_config(disable=True)
    return base, refiner


def pixels(shipped, name):
    return shipped.report(name).values["decode"]["image"].pixels


def test_sdxl_txt2img_is_the_sdxl_pipeline_with_its_zeroed_empty_negative(shipped, pipelines):
    base, _ = pipelines
    theirs = base(PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=CFG,
                  generator=torch.Generator("cpu").manual_seed(42), output_type="pt").images
    ours = pixels(shipped, "sdxl_txt2img.json")
    assert ours.shape == (1, SIZE, SIZE, 3) and ours.std() > 0.01
    assert base.default_sample_size * base.vae_scale_factor == SIZE  # the pipeline's own default size
    assert (ours - channels_last(theirs)).abs().max() <= 1e-5


def test_sdxl_refiner_runs_the_last_fifth_of_the_steps_and_is_the_diffusers_ensemble(shipped, pipelines):
    base, refiner = pipelines
    values = shipped.report("sdxl_refiner.json").values
    stopped, resumed = values["base_schedule"]["schedule"], values["refiner_schedule"]["schedule"]
    assert (stopped.start_index, stopped.end_index, resumed.start_index, resumed.end_index) == (0, 8, 8, None)
    common = dict(negative_prompt="blurry", num_inference_steps=STEPS, guidance_scale=CFG)
    latents = base(PROMPT, height=SIZE, width=SIZE, denoising_end=0.8, output_type="latent",
                   generator=torch.Generator("cpu").manual_seed(42), **common).images
    assert (values["base_sample"]["latent"].samples - latents).abs().max() <= 1e-5
    theirs = refiner(PROMPT, image=latents, denoising_start=0.8, output_type="pt",
                     generator=torch.Generator("cpu").manual_seed(42), **common).images
    ours = pixels(shipped, "sdxl_refiner.json")
    assert ours.std() > 0.01 and (ours - channels_last(theirs)).abs().max() <= 1e-5
