"""SDXL ControlNets: ApplyControlNet → Sample on tiny-sdxl gives StableDiffusionXLControlNetPipeline's pixels.

TextEncode (both encoders, ×2), EmptyLatent, Schedule, AddNoise, ApplyControlNet (one or two, chained), Sample,
VAEDecode against the pipeline with the same components, the same ControlNet(s) (two: diffusers'
MultiControlNetModel), control images, scales, control_guidance_start / _end and guess mode. The ControlNets get
the UNet's added conditioning (pooled text, size ids) for each half of the CFG batch, as the pipeline gives it.
"""
import pytest
import torch

from nodes.builtin_sdxl import build_tiny_sdxl_controlnet
from nodes.controlnet import ApplyControlNet
from nodes.latent import EmptyLatent
from nodes.sampling import SAMPLERS, AddNoise, Sample, Schedule, build_scheduler
from nodes.vae import VAEDecode, VAEEncode
from nodes.values import ControlNet, Image
from tests.nodes.runctx import run_node
from tests.nodes.stage_helpers import channels_last
from tests.nodes.test_sdxl import CFG, NEGATIVE, PROMPT, SIZE, STEPS, assert_same_pixels, encode, generator, values_of


@pytest.fixture(scope="module")
def xl_parts():
    from nodes.builtin_sdxl import build_tiny_sdxl_components

    return build_tiny_sdxl_components()


@pytest.fixture(scope="module")
def xl_control_nets(xl_parts):
    """Two different random ControlNets copied from tiny-sdxl's UNet (the built-in one and another seed)."""
    return [ControlNet(module=build_tiny_sdxl_controlnet(xl_parts), family="sdxl", name="tiny-sdxl-controlnet"),
            ControlNet(module=build_tiny_sdxl_controlnet(xl_parts, seed=99), family="sdxl", name="other")]


def control_image(seed: int) -> Image:
    """A blocky random picture, like an edge or segmentation map."""
    blocks = torch.rand(1, SIZE // 8, SIZE // 8, 3, generator=torch.Generator().manual_seed(seed))
    return Image(pixels=blocks.repeat_interleave(8, 1).repeat_interleave(8, 2))


def ours(parts, applications, sampler="euler", seed=42, latent=None, denoise=1.0, negative=NEGATIVE, batch=1):
    """The stage nodes, ApplyControlNet for each (control_net, image, strength, start, end, guess)."""
    model, clip, vae = values_of(parts)
    positive, negative = encode(clip, PROMPT), encode(clip, negative)
    for control_net, image, strength, start, end, guess in applications:
        positive, negative = run_node(ApplyControlNet, positive=positive, negative=negative, control_net=control_net,
                                      image=image, strength=strength, start_percent=start, end_percent=end,
                                      guess_mode=guess)
    if latent is None:
        latent = run_node(EmptyLatent, width=SIZE, height=SIZE, batch_size=batch, vae=vae)
    schedule = run_node(Schedule, model=model, sampler=sampler, steps=STEPS, denoise=denoise)
    noised = run_node(AddNoise, latent=latent, schedule=schedule, seed=seed)
    out, _ = run_node(Sample, model=model, positive=positive, negative=negative, latent=noised, cfg=CFG)
    return run_node(VAEDecode, vae=vae, latent=out).pixels


def controlnet_pipeline(parts, control_nets, sampler, img2img=False):
    from diffusers import StableDiffusionXLControlNetImg2ImgPipeline, StableDiffusionXLControlNetPipeline

    scheduler = build_scheduler(dict(parts["scheduler"].config), SAMPLERS[sampler])
    nets = [c.module for c in control_nets]
    cls = StableDiffusionXLControlNetImg2ImgPipeline if img2img else StableDiffusionXLControlNetPipeline
    pipe = cls(**{**parts, "scheduler": scheduler}, controlnet=nets[0] if len(nets) == 1 else nets,
               force_zeros_for_empty_prompt=True, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def theirs(parts, applications, sampler="euler", seed=42, batch=1):
    """The pipeline with the same ControlNets; guess mode as the applications say (diffusers has one switch)."""
    nets, images, scales, starts, ends, guesses = zip(*applications)
    single = len(nets) == 1

    def one_or_list(values):
        return values[0] if single else list(values)

    return channels_last(controlnet_pipeline(parts, nets, sampler)(
        PROMPT, negative_prompt=NEGATIVE, image=one_or_list([i.pixels.permute(0, 3, 1, 2) for i in images]),
        height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=CFG, generator=generator(seed),
        output_type="pt", controlnet_conditioning_scale=one_or_list(scales), control_guidance_start=one_or_list(starts),
        control_guidance_end=one_or_list(ends), guess_mode=guesses[0], num_images_per_prompt=batch).images)


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m"])
def test_one_sdxl_controlnet_matches_the_sdxl_controlnet_pipeline(xl_parts, xl_control_nets, sampler):
    applications = [(xl_control_nets[0], control_image(1), 0.8, 0.1, 0.7, False)]
    assert_same_pixels(ours(xl_parts, applications, sampler), theirs(xl_parts, applications, sampler))


def test_two_chained_sdxl_controlnets_match_multi_controlnet(xl_parts, xl_control_nets):
    applications = [(xl_control_nets[0], control_image(2), 1.0, 0.0, 0.5, False),
                    (xl_control_nets[1], control_image(3), 0.6, 0.25, 1.0, False)]
    assert_same_pixels(ours(xl_parts, applications, seed=7), theirs(xl_parts, applications, seed=7))


def test_sdxl_guess_mode_matches_the_pipeline_guess_mode(xl_parts, xl_control_nets):
    """Guess mode runs the ControlNet on the positive half only, with that half's pooled text and size ids."""
    applications = [(xl_control_nets[0], control_image(4), 1.2, 0.0, 1.0, True)]
    assert_same_pixels(ours(xl_parts, applications, seed=5), theirs(xl_parts, applications, seed=5))


def test_one_control_image_and_the_added_conditioning_serve_a_batch(xl_parts, xl_control_nets):
    applications = [(xl_control_nets[0], control_image(5), 1.0, 0.0, 1.0, False)]
    mine = ours(xl_parts, applications, seed=3, batch=2)
    assert mine.shape[0] == 2
    assert_same_pixels(mine, theirs(xl_parts, applications, seed=3, batch=2))


def test_sdxl_img2img_with_a_controlnet_matches_the_img2img_pipeline(xl_parts, xl_control_nets):
    """With denoise < 1 the step range is a share of the remaining steps (StableDiffusionXLControlNetImg2ImgPipeline)."""
    vae = values_of(xl_parts)[2]
    start = run_node(VAEEncode, vae=vae, image=Image(pixels=torch.linspace(0, 1, SIZE * SIZE * 3).reshape(1, SIZE, SIZE, 3)))
    image = control_image(6)
    mine = ours(xl_parts, [(xl_control_nets[0], image, 0.9, 0.2, 0.8, False)], seed=9, latent=start, denoise=0.6)
    pipe = controlnet_pipeline(xl_parts, xl_control_nets[:1], "euler", img2img=True)
    expected = pipe(PROMPT, negative_prompt=NEGATIVE, image=start.samples, control_image=image.pixels.permute(0, 3, 1, 2),
                    strength=0.6, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=CFG,
                    generator=generator(9), output_type="pt", controlnet_conditioning_scale=0.9,
                    control_guidance_start=0.2, control_guidance_end=0.8).images
    assert_same_pixels(mine, channels_last(expected))


def test_an_sdxl_controlnet_changes_the_picture_and_strength_0_is_none(xl_parts, xl_control_nets):
    """Guards the parity tests: the tiny SDXL ControlNet is not a no-op, its image counts, strength 0 is off."""
    plain = ours(xl_parts, [])
    controlled = [ours(xl_parts, [(xl_control_nets[0], control_image(seed), 1.0, 0.0, 1.0, False)]) for seed in (1, 2)]
    assert (controlled[0] - plain).abs().max() > 0.05
    assert (controlled[0] - controlled[1]).abs().max() > 0.05
    off = ours(xl_parts, [(xl_control_nets[0], control_image(1), 0.0, 0.0, 1.0, False)])
    assert torch.equal(off, plain)
