"""The stage nodes chained by hand give diffusers' pipelines' pixels (tiny model, 64×64, 8 steps).

txt2img:  Tokenize → CLIPTextEncode (×2), EmptyLatent, Schedule, AddNoise, Sample, VAEDecode
          vs StableDiffusionPipeline
img2img:  VAEEncode → Schedule(denoise) → AddNoise → Sample → VAEDecode
          vs StableDiffusionImg2ImgPipeline given the same encoded latents (a 4-channel `image` is taken as latents)
"""
import pytest
import torch

from nodes.latent import EmptyLatent
from nodes.sampling import SAMPLERS, AddNoise, Sample, Schedule
from nodes.text import CLIPTextEncode, Tokenize
from nodes.vae import VAEDecode, VAEEncode
from nodes.values import Image
from tests.nodes.runctx import run_node
from tests.nodes.stage_helpers import channels_last, pipeline

SIZE, STEPS, CFG = 64, 8, 7.5
PROMPT, NEGATIVE = "a red circle on a blue square", "blurry, low quality"
TOLERANCE = 1e-5
IMG2IMG_SAMPLERS = ["euler", "euler_a", "dpmpp_2m_karras", "ddim", "pndm", "lms"]


def encode(clip, text):
    return run_node(CLIPTextEncode, clip=clip, tokens=run_node(Tokenize, clip=clip, text=text))


def run_nodes(model, clip, vae, sampler, seed, latent=None, denoise=1.0, batch_size=1, cfg=CFG, eta=0.0,
              negative=NEGATIVE, condition=None):
    """The chain of stage nodes; ``condition(positive, negative)`` may rework the encoded prompts (ApplyControlNet)."""
    positive = encode(clip, PROMPT)
    negative = encode(clip, negative) if negative is not None else None
    if condition is not None:
        positive, negative = condition(positive, negative)
    if latent is None:
        latent = run_node(EmptyLatent, width=SIZE, height=SIZE, batch_size=batch_size, vae=vae)
    schedule = run_node(Schedule, model=model, sampler=sampler, steps=STEPS, denoise=denoise)
    noised = run_node(AddNoise, latent=latent, schedule=schedule, seed=seed)
    inputs = dict(model=model, positive=positive, latent=noised, cfg=cfg, eta=eta)
    if negative is not None:
        inputs["negative"] = negative
    latent, _previews = run_node(Sample, **inputs)
    return run_node(VAEDecode, vae=vae, latent=latent).pixels


def generator(seed):
    return torch.Generator("cpu").manual_seed(seed)


def assert_same_pixels(ours, theirs):
    assert ours.shape == theirs.shape
    assert ours.std() > 0.01, "a flat image would make the comparison meaningless"
    assert (ours - theirs).abs().max().item() <= TOLERANCE


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_txt2img_matches_stable_diffusion_pipeline(tiny_parts, sd_model, sd_clip, sd_vae, sampler):
    ours = run_nodes(sd_model, sd_clip, sd_vae, sampler, seed=42)
    theirs = pipeline(tiny_parts, sampler)(
        PROMPT, negative_prompt=NEGATIVE, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=CFG,
        generator=generator(42), output_type="pt").images
    assert_same_pixels(ours, channels_last(theirs))


@pytest.mark.parametrize("strength", [0.3, 0.75])
@pytest.mark.parametrize("sampler", IMG2IMG_SAMPLERS)
def test_img2img_matches_img2img_pipeline(tiny_parts, sd_model, sd_clip, sd_vae, sampler, strength):
    start_image = Image(pixels=torch.linspace(0, 1, SIZE * SIZE * 3).reshape(1, SIZE, SIZE, 3))
    clean = run_node(VAEEncode, vae=sd_vae, image=start_image)
    ours = run_nodes(sd_model, sd_clip, sd_vae, sampler, seed=7, latent=clean, denoise=strength)
    theirs = pipeline(tiny_parts, sampler, img2img=True)(
        PROMPT, image=clean.samples, strength=strength, negative_prompt=NEGATIVE, num_inference_steps=STEPS,
        guidance_scale=CFG, generator=generator(7), output_type="pt").images
    assert_same_pixels(ours, channels_last(theirs))


def test_batch_of_two_matches_num_images_per_prompt(tiny_parts, sd_model, sd_clip, sd_vae):
    # euler_a draws fresh noise every step from the same generator: the batch must draw in the same order.
    ours = run_nodes(sd_model, sd_clip, sd_vae, "euler_a", seed=3, batch_size=2)
    theirs = pipeline(tiny_parts, "euler_a")(
        PROMPT, negative_prompt=NEGATIVE, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=CFG,
        num_images_per_prompt=2, generator=generator(3), output_type="pt").images
    assert ours.shape[0] == 2
    assert not torch.equal(ours[0], ours[1])
    assert_same_pixels(ours, channels_last(theirs))


def test_cfg_one_needs_no_negative_and_matches_unguided_pipeline(tiny_parts, sd_model, sd_clip, sd_vae):
    ours = run_nodes(sd_model, sd_clip, sd_vae, "dpmpp_2m", seed=11, cfg=1.0, negative=None)
    theirs = pipeline(tiny_parts, "dpmpp_2m")(
        PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=1.0, generator=generator(11),
        output_type="pt").images
    assert_same_pixels(ours, channels_last(theirs))


def test_ddim_eta_matches_pipeline(tiny_parts, sd_model, sd_clip, sd_vae):
    # eta > 0 makes DDIM stochastic: the step noise must come from the continued generator stream.
    ours = run_nodes(sd_model, sd_clip, sd_vae, "ddim", seed=5, eta=0.6)
    theirs = pipeline(tiny_parts, "ddim")(
        PROMPT, negative_prompt=NEGATIVE, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=CFG,
        eta=0.6, generator=generator(5), output_type="pt").images
    assert_same_pixels(ours, channels_last(theirs))


def test_full_strength_on_an_image_latent_is_img2img_not_txt2img(tiny_parts, sd_model, sd_clip, sd_vae):
    # AddNoise treats a non-empty latent at denoise 1 as img2img at strength 1 (add_noise at the first timestep).
    start_image = Image(pixels=torch.linspace(1, 0, SIZE * SIZE * 3).reshape(1, SIZE, SIZE, 3))
    clean = run_node(VAEEncode, vae=sd_vae, image=start_image)
    ours = run_nodes(sd_model, sd_clip, sd_vae, "ddim", seed=13, latent=clean, denoise=1.0)
    theirs = pipeline(tiny_parts, "ddim", img2img=True)(
        PROMPT, image=clean.samples, strength=1.0, negative_prompt=NEGATIVE, num_inference_steps=STEPS,
        guidance_scale=CFG, generator=generator(13), output_type="pt").images
    assert_same_pixels(ours, channels_last(theirs))


def test_same_inputs_give_identical_pixels(sd_model, sd_clip, sd_vae):
    first = run_nodes(sd_model, sd_clip, sd_vae, "dpmpp_2m_sde_karras", seed=21)
    second = run_nodes(sd_model, sd_clip, sd_vae, "dpmpp_2m_sde_karras", seed=21)
    other_seed = run_nodes(sd_model, sd_clip, sd_vae, "dpmpp_2m_sde_karras", seed=22)
    assert torch.equal(first, second)
    assert not torch.allclose(first, other_seed)
