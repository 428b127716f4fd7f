"""ApplyControlNet → Sample gives diffusers' StableDiffusionControlNetPipeline's pixels (tiny model, 64×64, 8 steps).

Tokenize → CLIPTextEncode (×2), EmptyLatent, Schedule, AddNoise, ApplyControlNet (one or two, chained), Sample,
VAEDecode against the pipeline with the same components, the same ControlNet(s), control images, scales and
control_guidance_start / _end.
"""
import pytest
import torch

from nodes.builtin_models import build_tiny_controlnet
from nodes.controlnet import ApplyControlNet
from nodes.values import ControlNet, Image
from tests.nodes.runctx import run_node
from tests.nodes.stage_helpers import channels_last
from tests.nodes.test_parity import NEGATIVE, PROMPT, SIZE, STEPS, assert_same_pixels, generator, run_nodes

CFG = 7.5


@pytest.fixture(scope="module")
def control_nets():
    """Two different tiny ControlNets for the tiny UNet (the built-in one and another seed)."""
    return [ControlNet(build_tiny_controlnet(), "sd1", "tiny-sd-controlnet"),
            ControlNet(build_tiny_controlnet(seed=99), "sd1", "other")]


def control_image(seed: int) -> Image:
    """A blocky random picture, like an edge or segmentation map."""
    blocks = torch.rand(1, SIZE // 8, SIZE // 8, 3, generator=torch.Generator().manual_seed(seed))
    return Image(pixels=blocks.repeat_interleave(8, 1).repeat_interleave(8, 2))


def controlnet_pipeline(tiny_parts, controlnets, sampler):
    from diffusers import StableDiffusionControlNetPipeline

    from nodes.sampling import SAMPLERS, build_scheduler

    scheduler = build_scheduler(dict(tiny_parts["scheduler"].config), SAMPLERS[sampler])
    nets = [c.module for c in controlnets]
    pipe = StableDiffusionControlNetPipeline(**{**tiny_parts, "scheduler": scheduler},
                                             controlnet=nets[0] if len(nets) == 1 else nets,
                                             safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def with_controls(applications):
    """A run_nodes ``condition`` hook: ApplyControlNet for each (control_net, image, strength, start, end, guess)."""
    def condition(positive, negative):
        for control_net, image, strength, start, end, guess in applications:
            positive, negative = run_node(ApplyControlNet, positive=positive, negative=negative, control_net=control_net,
                                          image=image, strength=strength, start_percent=start, end_percent=end,
                                          guess_mode=guess)
        return positive, negative
    return condition


def theirs(tiny_parts, controlnets, images, sampler, seed, scale, start, end, guess_mode=False, batch=1):
    single = len(controlnets) == 1
    pixels = [i.pixels.permute(0, 3, 1, 2) for i in images]  # the pipeline takes (B, 3, H, W) tensors in [0, 1]
    return channels_last(controlnet_pipeline(tiny_parts, controlnets, sampler)(
        PROMPT, negative_prompt=NEGATIVE, image=pixels[0] if single else pixels, height=SIZE, width=SIZE,
        num_inference_steps=STEPS, guidance_scale=CFG, generator=generator(seed), output_type="pt",
        controlnet_conditioning_scale=scale[0] if single else scale,
        control_guidance_start=start[0] if single else start, control_guidance_end=end[0] if single else end,
        guess_mode=guess_mode, num_images_per_prompt=batch).images)


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m", "euler_a"])
def test_one_controlnet_matches_controlnet_pipeline(tiny_parts, sd_model, sd_clip, sd_vae, control_nets, sampler):
    image = control_image(1)
    ours = run_nodes(sd_model, sd_clip, sd_vae, sampler, seed=42,
                     condition=with_controls([(control_nets[0], image, 0.8, 0.1, 0.7, False)]))
    assert_same_pixels(ours, theirs(tiny_parts, control_nets[:1], [image], sampler, 42, [0.8], [0.1], [0.7]))


def test_two_chained_controlnets_match_multi_controlnet(tiny_parts, sd_model, sd_clip, sd_vae, control_nets):
    images = [control_image(2), control_image(3)]
    applications = [(control_nets[0], images[0], 1.0, 0.0, 0.5, False), (control_nets[1], images[1], 0.6, 0.25, 1.0, False)]
    ours = run_nodes(sd_model, sd_clip, sd_vae, "euler", seed=7, condition=with_controls(applications))
    assert_same_pixels(ours, theirs(tiny_parts, control_nets, images, "euler", 7, [1.0, 0.6], [0.0, 0.25], [0.5, 1.0]))


def test_guess_mode_matches_pipeline_guess_mode(tiny_parts, sd_model, sd_clip, sd_vae, control_nets):
    image = control_image(4)
    ours = run_nodes(sd_model, sd_clip, sd_vae, "euler", seed=5,
                     condition=with_controls([(control_nets[0], image, 1.2, 0.0, 1.0, True)]))
    assert_same_pixels(ours, theirs(tiny_parts, control_nets[:1], [image], "euler", 5, [1.2], [0.0], [1.0], guess_mode=True))


def test_one_control_image_serves_a_batch(tiny_parts, sd_model, sd_clip, sd_vae, control_nets):
    image = control_image(5)
    ours = run_nodes(sd_model, sd_clip, sd_vae, "euler", seed=3, batch_size=2,
                     condition=with_controls([(control_nets[0], image, 1.0, 0.0, 1.0, False)]))
    assert ours.shape[0] == 2
    assert_same_pixels(ours, theirs(tiny_parts, control_nets[:1], [image], "euler", 3, [1.0], [0.0], [1.0], batch=2))


def test_the_controlnet_changes_the_picture_and_its_image_matters(sd_model, sd_clip, sd_vae, control_nets):
    """Guards the parity tests: with these tiny weights a ControlNet is not a no-op, and the control image counts."""
    plain = run_nodes(sd_model, sd_clip, sd_vae, "euler", seed=42)
    controlled = [run_nodes(sd_model, sd_clip, sd_vae, "euler", seed=42,
                            condition=with_controls([(control_nets[0], control_image(seed), 1.0, 0.0, 1.0, False)]))
                  for seed in (1, 2)]
    assert (controlled[0] - plain).abs().max() > 0.05
    assert (controlled[0] - controlled[1]).abs().max() > 0.05


def test_img2img_step_range_counts_the_steps_sample_runs(tiny_parts, sd_model, sd_clip, sd_vae, control_nets):
    """With denoise < 1 the range is a share of the remaining steps, as in StableDiffusionControlNetImg2ImgPipeline."""
    from diffusers import StableDiffusionControlNetImg2ImgPipeline

    from nodes.sampling import SAMPLERS, build_scheduler
    from nodes.vae import VAEEncode

    start_image = Image(pixels=torch.linspace(0, 1, SIZE * SIZE * 3).reshape(1, SIZE, SIZE, 3))
    clean = run_node(VAEEncode, vae=sd_vae, image=start_image)
    image = control_image(6)
    ours = run_nodes(sd_model, sd_clip, sd_vae, "euler", seed=9, latent=clean, denoise=0.6,
                     condition=with_controls([(control_nets[0], image, 0.9, 0.2, 0.8, False)]))
    scheduler = build_scheduler(dict(tiny_parts["scheduler"].config), SAMPLERS["euler"])
    pipe = StableDiffusionControlNetImg2ImgPipeline(**{**tiny_parts, "scheduler": scheduler}, controlnet=control_nets[0].module,
                                                    safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(PROMPT, negative_prompt=NEGATIVE, image=clean.samples, control_image=image.pixels.permute(0, 3, 1, 2),
                  strength=0.6, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=CFG,
                  generator=generator(9), output_type="pt", controlnet_conditioning_scale=0.9,
                  control_guidance_start=0.2, control_guidance_end=0.8).images
    assert_same_pixels(ours, channels_last(theirs))
