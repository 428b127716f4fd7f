"""Inpainting: InpaintEncode / SetLatentNoiseMask → Schedule → AddNoise → Sample equals diffusers'
StableDiffusionInpaintPipeline, for a 4-channel UNet (blend back outside the mask after every step) and a
9-channel inpainting UNet (mask and masked-image latents concatenated to its input).

Keeping both sides deterministic: the pipeline encodes its image by *sampling* the VAE's latent
distribution with the run's generator (which also shifts the noise drawn after it), while InpaintEncode
takes the distribution's mode. So the pipeline is handed InpaintEncode's latents directly — a 4-channel
``image`` is taken as latents, and ``masked_image_latents`` replaces its own masked-image encoding — and it
gets the same 0/1 mask at image size, which its mask processor binarizes and resizes exactly as we do.
Nothing random is then drawn but the noise, from the same seeded generator on both sides. The pipeline
returns its decoded result as it is, so the parity tests turn InpaintEncode's paste-back off; the tests
under "paste-back" check what it does.
"""
import pytest
import torch

from graphflow.errors import NodeInputError, WorkflowInvalid
from graphflow.node import spec_of
from graphflow.registry import Registry
from graphflow.validate import validate
from graphflow.workflow import parse
from nodes.latent import EmptyLatent, SetLatentNoiseMask
from nodes.sampling import SAMPLERS, AddNoise, Sample, Schedule, build_scheduler
from nodes.text import CLIPTextEncode, Tokenize
from nodes.vae import InpaintEncode, VAEDecode, VAEEncode, encode_pixels
from nodes.values import Image, Latent, Mask, Model
from tests.nodes.runctx import make_ctx, run_node
from tests.nodes.stage_helpers import channels_last

SIZE, STEPS, CFG = 64, 8, 7.5
PROMPT, NEGATIVE = "a red circle on a blue square", "blurry, low quality"
TOLERANCE = 1e-5
SAMPLERS_TESTED = ["euler", "euler_a", "dpmpp_2m_karras", "ddim"]


@pytest.fixture(scope="module")
def inpaint_parts():
    """The tiny model's 9-channel inpainting variant (its VAE and text encoder equal the 4-channel model's)."""
    from nodes.builtin_models import build_tiny_components

    return build_tiny_components(in_channels=9)


@pytest.fixture(scope="module")
def inpaint_model(inpaint_parts):
    return Model(inpaint_parts["unet"], scheduler_config=dict(inpaint_parts["scheduler"].config), family="sd1",
                 prediction_type="epsilon", name="tiny-sd-inpainting")


def start_image() -> Image:
    return Image(pixels=torch.linspace(0, 1, SIZE * SIZE * 3).reshape(1, SIZE, SIZE, 3))


def box_mask(top=13, bottom=45, left=21, right=50, height=SIZE, width=SIZE) -> Mask:
    """1 inside a box whose edges fall between latent pixels (the tiny VAE halves each side)."""
    mask = torch.zeros(1, height, width)
    mask[:, top:bottom, left:right] = 1.0
    return Mask(mask=mask)


def encode(clip, text):
    return run_node(CLIPTextEncode, clip=clip, tokens=run_node(Tokenize, clip=clip, text=text))


def run_nodes(model, clip, vae, latent, sampler, seed, strength):
    schedule = run_node(Schedule, model=model, sampler=sampler, steps=STEPS, denoise=strength)
    noised = run_node(AddNoise, latent=latent, schedule=schedule, seed=seed)
    result, _ = run_node(Sample, model=model, positive=encode(clip, PROMPT), negative=encode(clip, NEGATIVE),
                     latent=noised, cfg=CFG)
    return result


def run_pipeline(components, latent, mask, sampler, seed, strength):
    from diffusers import StableDiffusionInpaintPipeline

    scheduler = build_scheduler(dict(components["scheduler"].config), SAMPLERS[sampler])
    pipe = StableDiffusionInpaintPipeline(**{**components, "scheduler": scheduler}, safety_checker=None,
                                          feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe(PROMPT, image=latent.samples, mask_image=mask.mask.clone(), masked_image_latents=latent.masked_image,
                height=SIZE, width=SIZE, strength=strength, negative_prompt=NEGATIVE, num_inference_steps=STEPS,
                guidance_scale=CFG, generator=torch.Generator("cpu").manual_seed(seed), output_type="pt").images


def assert_same_pixels(ours, theirs):
    assert ours.shape == theirs.shape
    assert ours.std() > 0.01, "a flat image would make the comparison meaningless"
    assert (ours - theirs).abs().max().item() <= TOLERANCE


# ---------------------------------------------------------------------------------------------- parity


@pytest.mark.parametrize("strength", [1.0, 0.6])
@pytest.mark.parametrize("sampler", SAMPLERS_TESTED)
def test_4_channel_inpainting_matches_the_inpaint_pipeline(tiny_parts, sd_model, sd_clip, sd_vae, sampler, strength):
    mask = box_mask()
    latent = run_node(InpaintEncode, vae=sd_vae, image=start_image(), mask=mask, paste_back=False)
    ours = run_node(VAEDecode, vae=sd_vae, latent=run_nodes(sd_model, sd_clip, sd_vae, latent, sampler, 5, strength)).pixels
    theirs = run_pipeline(tiny_parts, latent, mask, sampler, 5, strength)
    assert_same_pixels(ours, channels_last(theirs))


@pytest.mark.parametrize("strength", [1.0, 0.6])
@pytest.mark.parametrize("sampler", SAMPLERS_TESTED)
def test_9_channel_inpainting_matches_the_inpaint_pipeline(inpaint_parts, inpaint_model, sd_clip, sd_vae, sampler,
                                                           strength):
    mask = box_mask()
    latent = run_node(InpaintEncode, vae=sd_vae, image=start_image(), mask=mask, paste_back=False)
    result = run_nodes(inpaint_model, sd_clip, sd_vae, latent, sampler, 9, strength)
    ours = run_node(VAEDecode, vae=sd_vae, latent=result).pixels
    theirs = run_pipeline(inpaint_parts, latent, mask, sampler, 9, strength)
    assert_same_pixels(ours, channels_last(theirs))


def test_vae_encode_plus_set_latent_noise_mask_is_the_same_4_channel_input(tiny_parts, sd_model, sd_clip, sd_vae):
    mask = box_mask()
    inpaint = run_node(InpaintEncode, vae=sd_vae, image=start_image(), mask=mask)
    masked = run_node(SetLatentNoiseMask, latent=run_node(VAEEncode, vae=sd_vae, image=start_image()), mask=mask, vae=sd_vae)
    assert torch.equal(masked.samples, inpaint.samples) and torch.equal(masked.noise_mask, inpaint.noise_mask)
    assert masked.masked_image is None
    a = run_nodes(sd_model, sd_clip, sd_vae, masked, "dpmpp_2m", 3, 0.7).samples
    b = run_nodes(sd_model, sd_clip, sd_vae, inpaint, "dpmpp_2m", 3, 0.7).samples
    assert torch.equal(a, b)  # a 4-channel UNet ignores the masked-image latents


# ---------------------------------------------------------------------------------------------- what masks mean


def test_an_empty_mask_keeps_the_latent_exactly(sd_model, sd_clip, sd_vae):
    # after the last step the unmasked area is the clean latent itself, not a re-noised copy
    latent = run_node(InpaintEncode, vae=sd_vae, image=start_image(), mask=Mask(mask=torch.zeros(1, SIZE, SIZE)))
    result = run_nodes(sd_model, sd_clip, sd_vae, latent, "euler_a", 1, 1.0)
    assert torch.equal(result.samples, latent.samples)


def test_a_full_mask_at_full_strength_is_txt2img(sd_model, sd_clip, sd_vae):
    # the inpainting pipeline starts from pure noise at strength 1, as txt2img does
    latent = run_node(InpaintEncode, vae=sd_vae, image=start_image(), mask=Mask(mask=torch.ones(1, SIZE, SIZE)))
    inpainted = run_nodes(sd_model, sd_clip, sd_vae, latent, "euler", 4, 1.0)
    empty = run_node(EmptyLatent, width=SIZE, height=SIZE, vae=sd_vae)
    txt2img = run_nodes(sd_model, sd_clip, sd_vae, empty, "euler", 4, 1.0)
    assert torch.equal(inpainted.samples, txt2img.samples)


def test_outside_the_mask_stays_close_to_the_input_inside_it_changes(sd_model, sd_clip, sd_vae):
    mask = box_mask()
    latent = run_node(InpaintEncode, vae=sd_vae, image=start_image(), mask=mask)
    result = run_nodes(sd_model, sd_clip, sd_vae, latent, "dpmpp_2m", 2, 1.0).samples
    latent_mask = latent.noise_mask.bool().expand_as(result)
    assert torch.equal(result[~latent_mask], latent.samples[~latent_mask])
    assert (result[latent_mask] - latent.samples[latent_mask]).abs().mean() > 0.1


# ---------------------------------------------------------------------------------------------- paste-back


def inpainted_pixels(sd_model, sd_clip, sd_vae, mask, **encode_options):
    latent = run_node(InpaintEncode, vae=sd_vae, image=start_image(), mask=mask, **encode_options)
    return run_node(VAEDecode, vae=sd_vae, latent=run_nodes(sd_model, sd_clip, sd_vae, latent, "euler", 2, 1.0)).pixels


def test_paste_back_keeps_the_original_pixels_outside_the_blurred_mask(sd_model, sd_clip, sd_vae):
    from nodes.mask import gaussian_blur

    mask, original = box_mask(), start_image().pixels
    pasted = inpainted_pixels(sd_model, sd_clip, sd_vae, mask)
    raw = inpainted_pixels(sd_model, sd_clip, sd_vae, mask, paste_back=False)
    blurred = gaussian_blur(mask.mask, 4)  # the default mask_blur
    outside, inside = blurred[0] == 0, blurred[0] == 1
    assert torch.equal(pasted[0][outside], original[0][outside]), "exactly the input outside the blurred mask"
    assert torch.equal(pasted[0][inside], raw[0][inside]), "the sampler's result inside it"
    assert (raw[0][outside] - original[0][outside]).abs().mean() > 0.05, "without paste-back the decoder changes it"
    edge = (blurred[0] > 0) & (blurred[0] < 1)
    expected = raw[0][edge] * blurred[0][edge][:, None] + original[0][edge] * (1 - blurred[0][edge][:, None])
    assert torch.allclose(pasted[0][edge], expected, atol=1e-6), "a blend across the blurred edge"
    assert edge.any() and not (mask.mask[0][edge] == 1).all(), "the blur reaches both sides of the mask's edge"


def test_mask_blur_0_pastes_back_with_the_mask_itself(sd_model, sd_clip, sd_vae):
    mask, original = box_mask(), start_image().pixels
    pasted = inpainted_pixels(sd_model, sd_clip, sd_vae, mask, mask_blur=0)
    raw = inpainted_pixels(sd_model, sd_clip, sd_vae, mask, paste_back=False)
    keep = mask.mask[0] == 0
    assert torch.equal(pasted[0][keep], original[0][keep]) and torch.equal(pasted[0][~keep], raw[0][~keep])


def test_paste_back_goes_with_the_latent_through_noise_and_sampling_but_not_a_resize(sd_vae):
    from nodes.latent import LatentUpscale

    latent = run_node(InpaintEncode, vae=sd_vae, image=start_image(), mask=box_mask())
    assert latent.paste_pixels.shape == (1, SIZE, SIZE, 3) and latent.paste_mask.shape == (1, SIZE, SIZE)
    assert run_node(InpaintEncode, vae=sd_vae, image=start_image(), mask=box_mask(), paste_back=False).paste_pixels is None
    upscaled = run_node(LatentUpscale, latent=latent, scale_by=2.0, vae=sd_vae)
    assert upscaled.paste_pixels is None and upscaled.paste_mask is None, "a resized latent has no original to paste"


def test_an_inpainting_batch_from_repeat_latent_pastes_back_into_every_image(sd_vae):
    from nodes.latent import RepeatLatent

    latent = run_node(InpaintEncode, vae=sd_vae, image=start_image(), mask=box_mask())
    batch = run_node(RepeatLatent, latent=latent, amount=3)
    assert batch.paste_pixels.shape == (3, SIZE, SIZE, 3) and batch.paste_mask.shape == (3, SIZE, SIZE)
    decoded = run_node(VAEDecode, vae=sd_vae, latent=batch.replace(samples=torch.randn_like(batch.samples))).pixels
    keep = batch.paste_mask[0] == 0
    assert all(torch.equal(image[keep], start_image().pixels[0][keep]) for image in decoded)


def test_a_paste_back_that_does_not_fit_the_decoded_size_is_refused(sd_vae):
    latent = run_node(InpaintEncode, vae=sd_vae, image=start_image(), mask=box_mask())
    shrunk = latent.replace(samples=latent.samples[..., :16, :16])
    with pytest.raises(NodeInputError) as error:
        run_node(VAEDecode, vae=sd_vae, latent=shrunk)
    assert error.value.input == "latent" and "resized" in error.value.message


# ---------------------------------------------------------------------------------------------- the nodes


def test_inpaint_encode_blanks_the_masked_pixels_to_grey(sd_vae):
    image, mask = start_image(), box_mask()
    latent = run_node(InpaintEncode, vae=sd_vae, image=image, mask=mask)
    blanked = image.pixels.clone()
    blanked[0, 13:45, 21:50] = 0.5  # 0 in the VAE's [-1, 1], what the pipeline's `image * (mask < 0.5)` leaves
    assert torch.equal(latent.masked_image, encode_pixels(sd_vae, blanked))
    assert torch.equal(latent.samples, run_node(VAEEncode, vae=sd_vae, image=image).samples)
    assert latent.noise_mask.shape == (1, 1, SIZE // 2, SIZE // 2)


def test_noise_mask_is_the_pipelines_nearest_resize(sd_vae):
    # soft values survive (the pipeline binarizes first; for a 0/1 mask that changes nothing)
    mask = torch.rand(1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    latent = run_node(SetLatentNoiseMask, latent=Latent(samples=torch.zeros(1, 4, 32, 32)), mask=Mask(mask=mask), vae=sd_vae)
    assert torch.equal(latent.noise_mask, mask[:, None, ::2, ::2])


def test_a_mask_of_another_size_is_resized_with_a_warning(sd_vae, tmp_path):
    ctx, recorder = make_ctx(tmp_path)
    small = box_mask(top=6, bottom=22, left=10, right=25, height=SIZE // 2, width=SIZE // 2)
    latent = run_node(InpaintEncode, ctx=ctx, vae=sd_vae, image=start_image(), mask=small)
    assert latent.noise_mask.shape == (1, 1, SIZE // 2, SIZE // 2)
    assert len(recorder.warnings) == 1 and "resized" in recorder.warnings[0]
    fitting = run_node(InpaintEncode, ctx=ctx, vae=sd_vae, image=start_image(), mask=box_mask())
    assert len(recorder.warnings) == 1 and fitting.noise_mask.shape == latent.noise_mask.shape


def test_set_latent_noise_mask_needs_the_vae_that_gives_the_image_size():
    # the mask is at image size, latent size × the VAE's factor (8 for SD, 4 for toy-shapes): never guessed
    document = {"graphflow": 1, "nodes": {"m": {"type": "SetLatentNoiseMask", "inputs": {}}}}
    with pytest.raises(WorkflowInvalid) as error:
        validate(parse(document), Registry([spec_of(SetLatentNoiseMask)]))
    missing = {i.input for i in error.value.issues if i.code == "missing_input"}
    assert missing == {"latent", "mask", "vae"}


def test_masks_must_fit_the_batch(sd_vae):
    two_masks = Mask(mask=torch.ones(2, SIZE, SIZE))
    three_images = Image(pixels=torch.rand(3, SIZE, SIZE, 3))
    with pytest.raises(NodeInputError) as error:
        run_node(InpaintEncode, vae=sd_vae, image=three_images, mask=two_masks)
    assert error.value.input == "mask"
    one = run_node(InpaintEncode, vae=sd_vae, image=three_images, mask=Mask(mask=torch.ones(1, SIZE, SIZE)))
    assert one.masked_image.shape[0] == 3 and one.noise_mask.shape[0] == 1


def test_the_mask_goes_on_before_the_noise(sd_model, sd_vae):
    noised = run_node(AddNoise, latent=run_node(EmptyLatent, width=SIZE, height=SIZE, vae=sd_vae),
                  schedule=run_node(Schedule, model=sd_model, steps=2), seed=0)
    with pytest.raises(NodeInputError) as error:
        run_node(SetLatentNoiseMask, latent=noised, mask=box_mask(), vae=sd_vae)
    assert error.value.input == "latent" and "before AddNoise" in error.value.message


def test_an_inpainting_unet_needs_inpaint_encode(inpaint_model, sd_clip, sd_vae):
    plain = run_node(VAEEncode, vae=sd_vae, image=start_image())
    for latent in (plain, run_node(SetLatentNoiseMask, latent=plain, mask=box_mask(), vae=sd_vae)):
        noised = run_node(AddNoise, latent=latent, schedule=run_node(Schedule, model=inpaint_model, steps=2), seed=0)
        with pytest.raises(NodeInputError) as error:
            run_node(Sample, model=inpaint_model, positive=encode(sd_clip, PROMPT), latent=noised, cfg=1.0)
        assert error.value.input == "latent" and "InpaintEncode" in error.value.expected


def test_a_unet_of_another_channel_count_is_refused(sd_model, sd_clip):
    odd = Latent(samples=torch.zeros(1, 3, 16, 16))
    noised = run_node(AddNoise, latent=odd, schedule=run_node(Schedule, model=sd_model, steps=2), seed=0)
    with pytest.raises(NodeInputError) as error:
        run_node(Sample, model=sd_model, positive=encode(sd_clip, PROMPT), latent=noised, cfg=1.0)
    assert error.value.input == "model"


def test_inpainting_leaves_inputs_untouched(sd_model, inpaint_model, sd_clip, sd_vae):
    image, mask = start_image(), box_mask()
    digests = [v.__graphflow_digest__() for v in (image, mask)]
    latent = run_node(InpaintEncode, vae=sd_vae, image=image, mask=mask)
    latent_digest = latent.__graphflow_digest__()
    for model in (sd_model, inpaint_model):
        run_nodes(model, sd_clip, sd_vae, latent, "euler_a", 0, 0.5)
    assert [v.__graphflow_digest__() for v in (image, mask)] == digests
    assert latent.__graphflow_digest__() == latent_digest
