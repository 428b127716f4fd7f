"""SDXL through the stage nodes gives diffusers' SDXL pipelines' pixels (tiny random SDXL base and refiner, 64×64).

txt2img:  TextEncode (both encoders) → EmptyLatent → Schedule → AddNoise → Sample → VAEDecode
          vs StableDiffusionXLPipeline
img2img:  VAEEncode → Schedule(denoise) → ... vs StableDiffusionXLImg2ImgPipeline (base, and the refiner with its
          aesthetic scores)
"""
import pytest
import torch

from graphflow.errors import InvalidArgument, NodeInputError
from nodes.builtin_sdxl import build_tiny_sdxl_components, sdxl_pipeline
from nodes.conditioning import prompt_conditioning, prompt_tokens
from nodes.latent import EmptyLatent
from nodes.loaders import LoadCheckpoint
from nodes.sampling import SAMPLERS, AddNoise, Sample, Schedule, build_scheduler
from nodes.sdxl import SDXLSizes
from nodes.text import TextEncode
from nodes.vae import VAEDecode, VAEEncode
from nodes.values import Clip, Image, Model, Vae
from tests.nodes.runctx import run_node
from tests.nodes.stage_helpers import channels_last

SIZE, STEPS, CFG = 64, 6, 5.0
PROMPT, NEGATIVE = "a red circle on a blue square", "blurry, low quality"
TOLERANCE = 1e-5


@pytest.fixture(scope="session")
def base_parts():
    return build_tiny_sdxl_components()


@pytest.fixture(scope="session")
def refiner_parts():
    return build_tiny_sdxl_components(refiner=True)


def values_of(parts: dict):
    """MODEL, CLIP, VAE over the same modules, with the facts LoadCheckpoint reads from an SDXL folder."""
    refiner = parts["text_encoder"] is None
    family = "sdxl-refiner" if refiner else "sdxl"
    encoders = [(parts["tokenizer_2"], parts["text_encoder_2"])] if refiner else \
        [(parts["tokenizer"], parts["text_encoder"]), (parts["tokenizer_2"], parts["text_encoder_2"])]
    (tokenizer, text_encoder), (tokenizer_2, text_encoder_2) = encoders[0], (encoders[1] if len(encoders) > 1 else (None, None))
    downscale = 2 ** (len(parts["vae"].config.block_out_channels) - 1)
    model = Model(parts["unet"], dict(parts["scheduler"].config), family, "epsilon", family, vae_scale_factor=downscale,
                  zero_empty_negative=not refiner)
    clip = Clip(tokenizer, text_encoder, family, family, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2)
    return model, clip, Vae(parts["vae"], family)


def pipe_for(parts, sampler, img2img=None):
    scheduler = build_scheduler(dict(parts["scheduler"].config), SAMPLERS[sampler])
    pipe = sdxl_pipeline({**parts, "scheduler": scheduler}, img2img=img2img)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def encode(clip, text, **sizes):
    conditioning = run_node(TextEncode, clip=clip, text=text)
    return run_node(SDXLSizes, conditioning=conditioning, **sizes) if sizes else conditioning


def sample(parts, sampler, seed, latent=None, denoise=1.0, negative=NEGATIVE, positive_sizes=None, negative_sizes=None):
    model, clip, vae = values_of(parts)
    if latent is None:
        latent = run_node(EmptyLatent, width=SIZE, height=SIZE, batch_size=1, vae=vae)
    schedule = run_node(Schedule, model=model, sampler=sampler, steps=STEPS, denoise=denoise)
    noised = run_node(AddNoise, latent=latent, schedule=schedule, seed=seed)
    out, _ = run_node(Sample, model=model, positive=encode(clip, PROMPT, **(positive_sizes or {})),
                      negative=encode(clip, negative, **(negative_sizes or {})), latent=noised, cfg=CFG)
    return run_node(VAEDecode, vae=vae, latent=out).pixels


def generator(seed):
    return torch.Generator("cpu").manual_seed(seed)


def assert_same_pixels(ours, theirs):
    assert ours.shape == theirs.shape
    assert ours.std() > 0.01, "a flat image would make the comparison meaningless"
    assert (ours - theirs).abs().max().item() <= TOLERANCE


def start_latent(parts):
    image = Image(pixels=torch.linspace(0, 1, SIZE * SIZE * 3).reshape(1, SIZE, SIZE, 3))
    return run_node(VAEEncode, vae=values_of(parts)[2], image=image)


@pytest.mark.parametrize("sampler", ["euler", "euler_a", "dpmpp_2m_karras", "ddim", "heun", "unipc"])
def test_txt2img_matches_sdxl_pipeline(base_parts, sampler):
    ours = sample(base_parts, sampler, seed=42)
    theirs = pipe_for(base_parts, sampler)(
        PROMPT, negative_prompt=NEGATIVE, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=CFG,
        generator=generator(42), output_type="pt").images
    assert_same_pixels(ours, channels_last(theirs))


def test_empty_negative_is_zeroed_as_the_base_pipeline_does(base_parts):
    ours = sample(base_parts, "euler", seed=3, negative="")
    pipe = pipe_for(base_parts, "euler")
    settings = dict(height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=CFG, output_type="pt")
    zeroed = pipe(PROMPT, generator=generator(3), **settings).images  # negative_prompt=None: zeros
    encoded = pipe(PROMPT, negative_prompt="", generator=generator(3), **settings).images  # "" encoded
    assert_same_pixels(ours, channels_last(zeroed))
    assert (ours - channels_last(encoded)).abs().max() > 1e-3


def test_size_and_crop_conditioning_match_the_pipeline(base_parts):
    sizes = dict(original_width=128, original_height=96, crop_left=16, crop_top=8, target_width=80, target_height=72)
    ours = sample(base_parts, "euler", seed=5, positive_sizes=sizes)
    theirs = pipe_for(base_parts, "euler")(
        PROMPT, negative_prompt=NEGATIVE, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=CFG,
        original_size=(96, 128), crops_coords_top_left=(8, 16), target_size=(72, 80), generator=generator(5),
        output_type="pt").images
    assert_same_pixels(ours, channels_last(theirs))
    assert (ours - sample(base_parts, "euler", seed=5)).abs().max() > 1e-4  # the ids reach the UNet


def test_sdxl_sizes_default_to_1024_and_a_size_of_0_is_the_images_as_without_the_node(base_parts):
    defaults = sample(base_parts, "euler", seed=5, positive_sizes={"crop_top": 0})
    theirs = pipe_for(base_parts, "euler")(
        PROMPT, negative_prompt=NEGATIVE, height=SIZE, width=SIZE, num_inference_steps=STEPS, guidance_scale=CFG,
        original_size=(1024, 1024), target_size=(1024, 1024), generator=generator(5), output_type="pt").images
    assert_same_pixels(defaults, channels_last(theirs))
    image_sized = sample(base_parts, "euler", seed=5, positive_sizes=dict.fromkeys(
        ("original_width", "original_height", "target_width", "target_height"), 0))
    assert torch.equal(image_sized, sample(base_parts, "euler", seed=5))  # the pipeline's default: the image's size
    assert (image_sized - defaults).abs().max() > 1e-4


@pytest.mark.parametrize("sampler", ["euler", "ddim"])
def test_img2img_matches_sdxl_img2img_pipeline(base_parts, sampler):
    clean = start_latent(base_parts)
    ours = sample(base_parts, sampler, seed=7, latent=clean, denoise=0.6)
    theirs = pipe_for(base_parts, sampler, img2img=True)(
        PROMPT, image=clean.samples, strength=0.6, negative_prompt=NEGATIVE, num_inference_steps=STEPS,
        guidance_scale=CFG, generator=generator(7), output_type="pt").images
    assert_same_pixels(ours, channels_last(theirs))


@pytest.mark.parametrize("scores", [None, (7.5, 1.0)])
def test_refiner_img2img_matches_with_its_aesthetic_scores(refiner_parts, scores):
    clean = start_latent(refiner_parts)
    extra, positive_sizes, negative_sizes = {}, None, None
    if scores:
        # SDXLSizes sets the scores, and its default original size of 1024 on both sides
        extra = dict(aesthetic_score=scores[0], negative_aesthetic_score=scores[1], original_size=(1024, 1024))
        positive_sizes, negative_sizes = dict(aesthetic_score=scores[0]), dict(aesthetic_score=scores[1])
    ours = sample(refiner_parts, "euler", seed=9, latent=clean, denoise=0.5, positive_sizes=positive_sizes,
                  negative_sizes=negative_sizes)
    theirs = pipe_for(refiner_parts, "euler")(
        PROMPT, image=clean.samples, strength=0.5, negative_prompt=NEGATIVE, num_inference_steps=STEPS,
        guidance_scale=CFG, generator=generator(9), output_type="pt", **extra).images
    assert_same_pixels(ours, channels_last(theirs))


def test_refiner_keeps_an_empty_negative_encoded(refiner_parts):
    # the refiner's pipeline config has force_zeros_for_empty_prompt false: "" is encoded, never zeroed
    clean = start_latent(refiner_parts)
    ours = sample(refiner_parts, "euler", seed=2, latent=clean, denoise=0.5, negative="")
    theirs = pipe_for(refiner_parts, "euler")(
        PROMPT, image=clean.samples, strength=0.5, num_inference_steps=STEPS, guidance_scale=CFG,
        generator=generator(2), output_type="pt").images
    assert_same_pixels(ours, channels_last(theirs))


@pytest.mark.parametrize("clip_skip", [1, 2, 3])
def test_both_encoders_and_clip_skip_match_encode_prompt(base_parts, clip_skip):
    _, clip, _ = values_of(base_parts)
    ours = prompt_conditioning(clip, prompt_tokens(clip, PROMPT, text_2="a green triangle"), clip_skip=clip_skip)
    embeds, _, pooled, _ = pipe_for(base_parts, "euler").encode_prompt(
        PROMPT, prompt_2="a green triangle", do_classifier_free_guidance=False,
        clip_skip=None if clip_skip == 1 else clip_skip - 1)
    assert ours.embeds.shape == (1, 77, 32 + 64)
    assert torch.equal(ours.embeds, embeds) and torch.equal(ours.pooled, pooled)


def test_long_prompts_break_and_emphasis_apply_to_both_encoders(base_parts):
    _, clip, _ = values_of(base_parts)
    plain = prompt_conditioning(clip, prompt_tokens(clip, "a cat"))
    broken = prompt_conditioning(clip, prompt_tokens(clip, "a cat BREAK a dog"))
    assert broken.embeds.shape == (1, 154, 96) and broken.empty_chunk.shape == (1, 77, 96)
    assert torch.equal(broken.pooled, plain.pooled)  # pooled from the first window, as A1111 takes it
    weighted = prompt_conditioning(clip, prompt_tokens(clip, "a (cat:1.5)"))
    changed = (weighted.embeds - plain.embeds).abs().amax(dim=(0, 1))
    assert changed[:32].max() > 0 and changed[32:].max() > 0  # both encoders' features are weighted
    longer_second = prompt_conditioning(clip, prompt_tokens(clip, "a cat", text_2="dog " * 100))
    assert longer_second.embeds.shape == (1, 154, 96)  # the first encoder's features padded with its empty prompt


def test_text_2_is_refused_for_a_single_encoder_clip(refiner_parts):
    _, clip, _ = values_of(refiner_parts)
    with pytest.raises(InvalidArgument, match="single text encoder"):
        prompt_tokens(clip, "a cat", text_2="a dog")


def test_sizes_are_refused_on_a_conditioning_without_pooled_embedding(sd_clip):
    conditioning = run_node(TextEncode, clip=sd_clip, text="a cat")
    with pytest.raises(NodeInputError, match="SDXL"):
        run_node(SDXLSizes, conditioning=conditioning, original_width=512)


def test_an_sd1_conditioning_on_an_sdxl_unet_names_the_input(base_parts, sd_clip):
    model, _, vae = values_of(base_parts)
    latent = run_node(AddNoise, latent=run_node(EmptyLatent, width=SIZE, height=SIZE, batch_size=1, vae=vae),
                      schedule=run_node(Schedule, model=model, steps=2), seed=0)
    with pytest.raises(NodeInputError) as error:
        run_node(Sample, model=model, positive=run_node(TextEncode, clip=sd_clip, text="a"), latent=latent, cfg=1.0)
    assert (error.value.input, error.value.expected, error.value.received) == ("positive", 96, 32)


@pytest.mark.parametrize("name, refiner", [("tiny-sdxl", False), ("tiny-sdxl-refiner", True)])
def test_builtin_tiny_sdxl_loads_with_the_weights_it_is_built_from(loader_ctx, name, refiner):
    model, clip, vae = run_node(LoadCheckpoint, loader_ctx, name=name)
    built = build_tiny_sdxl_components(refiner=refiner)
    assert (model.family, clip.family) == (("sdxl-refiner",) * 2 if refiner else ("sdxl",) * 2)
    assert (model.vae_scale_factor, model.zero_empty_negative) == (8, not refiner)  # SDXL's 8x VAE
    assert model.scheduler_config["_class_name"] == "EulerDiscreteScheduler"
    first = built["text_encoder_2" if refiner else "text_encoder"]
    pairs = [(model.unet, built["unet"]), (vae.vae, built["vae"]), (clip.text_encoder, first)]
    if refiner:
        assert clip.text_encoder_2 is None and clip.tokenizer.pad_token == "!"
    else:
        pairs.append((clip.text_encoder_2, built["text_encoder_2"]))
        assert (clip.tokenizer.pad_token, clip.tokenizer_2.pad_token) == ("<|endoftext|>", "!")
    for loaded, original in pairs:
        theirs = original.state_dict()
        assert loaded.state_dict().keys() == theirs.keys()
        assert all(torch.equal(tensor, theirs[key]) for key, tensor in loaded.state_dict().items())


# --- base → refiner hand-off: denoising_end / denoising_start ---------------------------------------------------

@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m", "heun", "ddim"])
@pytest.mark.parametrize("fraction", [0.8, 0.55])
def test_a_stopped_schedule_and_a_resumed_one_split_the_steps_as_diffusers_does(sd_model, sampler, fraction):
    stopped = run_node(Schedule, model=sd_model, sampler=sampler, steps=10, denoising_end=fraction)
    resumed = run_node(Schedule, model=sd_model, sampler=sampler, steps=10, denoising_start=fraction)
    scheduler = build_scheduler(sd_model.scheduler_config, SAMPLERS[sampler])
    scheduler.set_timesteps(10)
    cutoff = int(round(1000 - fraction * 1000))
    ran = stopped.timesteps[stopped.start_index:stopped.end_index]
    assert stopped.start_index == 0 and ran.tolist() == [t for t in scheduler.timesteps.tolist() if t >= cutoff]
    remaining = int((scheduler.timesteps < cutoff).sum())
    remaining += 1 if scheduler.order == 2 and remaining % 2 == 0 else 0
    assert resumed.start_index == len(scheduler.timesteps) - remaining and resumed.end_index is None
    assert resumed.resumes and not stopped.resumes


def test_denoising_start_cannot_be_combined_with_denoise(sd_model):
    with pytest.raises(NodeInputError) as error:
        run_node(Schedule, model=sd_model, steps=10, denoise=0.5, denoising_start=0.8)
    assert error.value.input == "denoise"
    with pytest.raises(NodeInputError, match="end after it starts"):
        run_node(Schedule, model=sd_model, steps=10, denoising_start=0.8, denoising_end=0.5)


def ensemble(base_parts, refiner_parts, sampler, steps, fraction, seed):
    """Base for ``fraction`` of the schedule, the refiner for the rest, through the nodes."""
    base, base_clip, vae = values_of(base_parts)
    refiner, refiner_clip, refiner_vae = values_of(refiner_parts)
    latent = run_node(EmptyLatent, width=SIZE, height=SIZE, batch_size=1, vae=vae)
    stopped = run_node(Schedule, model=base, sampler=sampler, steps=steps, denoising_end=fraction)
    noised = run_node(AddNoise, latent=latent, schedule=stopped, seed=seed)
    handed_over, _ = run_node(Sample, model=base, positive=encode(base_clip, PROMPT), negative=encode(base_clip, NEGATIVE),
                              latent=noised, cfg=CFG)
    resumed = run_node(Schedule, model=refiner, sampler=sampler, steps=steps, denoising_start=fraction)
    carried = run_node(AddNoise, latent=handed_over, schedule=resumed, seed=seed)
    finished, _ = run_node(Sample, model=refiner, positive=encode(refiner_clip, PROMPT),
                           negative=encode(refiner_clip, NEGATIVE), latent=carried, cfg=CFG)
    return handed_over, run_node(VAEDecode, vae=refiner_vae, latent=finished).pixels


@pytest.mark.parametrize("sampler", ["euler", "euler_a", "dpmpp_2m", "heun"])
def test_base_plus_refiner_matches_the_diffusers_ensemble(base_parts, refiner_parts, sampler):
    handed_over, ours = ensemble(base_parts, refiner_parts, sampler, steps=10, fraction=0.8, seed=4)
    common = dict(negative_prompt=NEGATIVE, num_inference_steps=10, guidance_scale=CFG)
    latents = pipe_for(base_parts, sampler)(PROMPT, height=SIZE, width=SIZE, denoising_end=0.8, generator=generator(4),
                                            output_type="latent", **common).images
    assert (handed_over.samples - latents).abs().max() <= TOLERANCE
    theirs = pipe_for(refiner_parts, sampler)(PROMPT, image=latents, denoising_start=0.8, generator=generator(4),
                                              output_type="pt", **common).images
    assert_same_pixels(ours, channels_last(theirs))


def test_merge_clip_merges_both_sdxl_encoders_and_refuses_a_single_encoder_clip(base_parts, sd_clip):
    from nodes.merge import MergeClip

    _, clip, _ = values_of(base_parts)
    doubled = clip.replace(text_encoder_2=scaled(clip.text_encoder_2, 3.0))
    merged = run_node(MergeClip, clip_a=clip, clip_b=doubled, mode="weighted_sum", alpha=0.5)
    a, b = clip.text_encoder_2.state_dict(), merged.text_encoder_2.state_dict()
    assert all(torch.allclose(b[k], 2.0 * a[k]) for k in a if a[k].is_floating_point())
    assert all(torch.equal(t, clip.text_encoder.state_dict()[k]) for k, t in merged.text_encoder.state_dict().items())
    with pytest.raises(NodeInputError) as error:
        run_node(MergeClip, clip_a=clip, clip_b=sd_clip)
    assert (error.value.input, error.value.received) == ("clip_b", 1)


def scaled(module, factor):
    from nodes.patching import clone_with_weights

    return clone_with_weights(module, {k: v * factor if v.is_floating_point() else v for k, v in module.state_dict().items()})


def test_sdxl_tokens_and_conditioning_survive_the_disk_cache(base_parts):
    from nodes.values import value_from_disk, value_to_disk

    _, clip, _ = values_of(base_parts)
    tokens = prompt_tokens(clip, "a cat", text_2="a dog")
    conditioning = run_node(SDXLSizes, conditioning=prompt_conditioning(clip, tokens), original_width=100)
    for value in (tokens, conditioning):
        back = value_from_disk(*value_to_disk(value))
        assert back.__graphflow_digest__() == value.__graphflow_digest__()
    assert back.sizes == {"original_width": 100.0, "original_height": 1024.0, "target_width": 1024.0,
                          "target_height": 1024.0, "crop_left": 0.0, "crop_top": 0.0} and back.pooled.shape == (1, 32)
