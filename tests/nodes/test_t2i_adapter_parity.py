"""ApplyT2IAdapter → Sample gives diffusers' StableDiffusionAdapterPipeline's and StableDiffusionXLAdapterPipeline's
pixels (tiny random models and adapters, 64×64).

Tokenize → TextEncode (×2), EmptyLatent, Schedule, AddNoise, ApplyT2IAdapter (one or two, chained), Sample,
VAEDecode against the pipeline with the same components, the same adapter(s) (diffusers' MultiAdapter for two),
control images, adapter_conditioning_scale and (SDXL) adapter_conditioning_factor.
"""
import pytest
import torch

from nodes.builtin_sdxl import build_tiny_sdxl_components
from nodes.sampling import SAMPLERS, build_scheduler
from nodes.t2i_adapter import ApplyT2IAdapter, build_tiny_adapter
from nodes.values import Image, T2IAdapter
from tests.nodes import test_sdxl
from tests.nodes.runctx import run_node
from tests.nodes.stage_helpers import channels_last
from tests.nodes.test_parity import NEGATIVE, PROMPT, SIZE, STEPS, assert_same_pixels, generator, run_nodes

CFG = 7.5


@pytest.fixture(scope="module")
def sd_adapters(tiny_parts):
    """Two different tiny adapters for the tiny SD UNet (the built-in one's seed, and another)."""
    unet, vae = tiny_parts["unet"].config, tiny_parts["vae"].config
    return [T2IAdapter(build_tiny_adapter(unet, vae, seed=s), f"adapter-{s}") for s in (1, 2)]


@pytest.fixture(scope="module")
def xl_parts():
    return build_tiny_sdxl_components()


@pytest.fixture(scope="module")
def xl_adapter(xl_parts):
    return T2IAdapter(build_tiny_adapter(xl_parts["unet"].config, xl_parts["vae"].config, seed=3), "xl")


def control_image(seed: int, size: int = SIZE) -> Image:
    """A blocky random picture, like an edge or segmentation map."""
    blocks = torch.rand(1, size // 8, size // 8, 3, generator=torch.Generator().manual_seed(seed))
    return Image(pixels=blocks.repeat_interleave(8, 1).repeat_interleave(8, 2))


def with_adapters(applications):
    """A run_nodes ``condition`` hook: ApplyT2IAdapter for each (adapter, image, strength, end_percent)."""
    def condition(positive, negative):
        for adapter, image, strength, end in applications:
            positive, negative = run_node(ApplyT2IAdapter, positive=positive, negative=negative, t2i_adapter=adapter,
                                          image=image, strength=strength, end_percent=end)
        return positive, negative
    return condition


def adapter_argument(adapters):
    from diffusers import MultiAdapter

    modules = [a.module for a in adapters]
    return modules[0] if len(modules) == 1 else MultiAdapter(modules)


def theirs_sd(tiny_parts, adapters, images, sampler, seed, scales, batch=1):
    from diffusers import StableDiffusionAdapterPipeline

    scheduler = build_scheduler(dict(tiny_parts["scheduler"].config), SAMPLERS[sampler])
    pipe = StableDiffusionAdapterPipeline(**{**tiny_parts, "scheduler": scheduler}, adapter=adapter_argument(adapters),
                                          safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pixels = [i.pixels.permute(0, 3, 1, 2) for i in images]  # the pipeline takes (B, 3, H, W) tensors in [0, 1]
    single = len(adapters) == 1
    images = pipe(  # this pipeline decodes the old way: numpy (B, H, W, 3) in [0, 1] for any output_type but pil
        PROMPT, negative_prompt=NEGATIVE, image=pixels[0] if single else pixels, height=SIZE, width=SIZE,
        num_inference_steps=STEPS, guidance_scale=CFG, generator=generator(seed), output_type="pt",
        adapter_conditioning_scale=scales[0] if single else scales, num_images_per_prompt=batch).images
    return torch.from_numpy(images)


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m"])
def test_one_adapter_matches_the_adapter_pipeline(tiny_parts, sd_model, sd_clip, sd_vae, sd_adapters, sampler):
    image = control_image(1)
    ours = run_nodes(sd_model, sd_clip, sd_vae, sampler, seed=42, condition=with_adapters([(sd_adapters[0], image, 0.8, 1.0)]))
    assert_same_pixels(ours, theirs_sd(tiny_parts, sd_adapters[:1], [image], sampler, 42, [0.8]))


def test_two_chained_adapters_match_multi_adapter(tiny_parts, sd_model, sd_clip, sd_vae, sd_adapters):
    images = [control_image(2), control_image(3)]
    ours = run_nodes(sd_model, sd_clip, sd_vae, "euler", seed=7,
                     condition=with_adapters([(sd_adapters[0], images[0], 1.0, 1.0), (sd_adapters[1], images[1], 0.6, 1.0)]))
    assert_same_pixels(ours, theirs_sd(tiny_parts, sd_adapters, images, "euler", 7, [1.0, 0.6]))


def test_one_control_image_serves_a_batch(tiny_parts, sd_model, sd_clip, sd_vae, sd_adapters):
    image = control_image(5)
    ours = run_nodes(sd_model, sd_clip, sd_vae, "euler", seed=3, batch_size=2,
                     condition=with_adapters([(sd_adapters[0], image, 1.0, 1.0)]))
    assert ours.shape[0] == 2
    assert_same_pixels(ours, theirs_sd(tiny_parts, sd_adapters[:1], [image], "euler", 3, [1.0], batch=2))


def test_the_adapter_changes_the_picture_and_its_image_matters(sd_model, sd_clip, sd_vae, sd_adapters):
    """Guards the parity tests: with these tiny weights an adapter is not a no-op, and the control image counts."""
    plain = run_nodes(sd_model, sd_clip, sd_vae, "euler", seed=42)
    adapted = [run_nodes(sd_model, sd_clip, sd_vae, "euler", seed=42,
                         condition=with_adapters([(sd_adapters[0], control_image(seed), 1.0, 1.0)])) for seed in (1, 2)]
    assert (adapted[0] - plain).abs().max() > 0.05
    assert (adapted[0] - adapted[1]).abs().max() > 0.05


def sdxl_sample(parts, adapter, image, seed, strength, end, sampler="euler", denoising_end=1.0, decode=True):
    model, clip, vae = test_sdxl.values_of(parts)
    model = model.replace(vae_scale_factor=2 ** (len(parts["vae"].config.block_out_channels) - 1))
    from nodes.latent import EmptyLatent
    from nodes.sampling import AddNoise, Sample, Schedule
    from nodes.vae import VAEDecode

    positive, negative = (test_sdxl.encode(clip, text) for text in (test_sdxl.PROMPT, test_sdxl.NEGATIVE))
    positive, negative = run_node(ApplyT2IAdapter, positive=positive, negative=negative, t2i_adapter=adapter,
                                  image=image, strength=strength, end_percent=end)
    latent = run_node(EmptyLatent, width=test_sdxl.SIZE, height=test_sdxl.SIZE, batch_size=1, vae=vae)
    schedule = run_node(Schedule, model=model, sampler=sampler, steps=test_sdxl.STEPS, denoising_end=denoising_end)
    noised = run_node(AddNoise, latent=latent, schedule=schedule, seed=seed)
    out, _ = run_node(Sample, model=model, positive=positive, negative=negative, latent=noised, cfg=test_sdxl.CFG)
    return run_node(VAEDecode, vae=vae, latent=out).pixels if decode else out.samples


def xl_adapter_pipeline(xl_parts, adapter):
    from diffusers import StableDiffusionXLAdapterPipeline

    scheduler = build_scheduler(dict(xl_parts["scheduler"].config), SAMPLERS["euler"])
    pipe = StableDiffusionXLAdapterPipeline(**{**xl_parts, "scheduler": scheduler}, adapter=adapter.module,
                                            force_zeros_for_empty_prompt=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("end", [1.0, 0.5])
def test_sdxl_adapter_matches_the_sdxl_adapter_pipeline(xl_parts, xl_adapter, end):
    image = control_image(4, test_sdxl.SIZE)
    ours = sdxl_sample(xl_parts, xl_adapter, image, seed=11, strength=0.9, end=end)
    theirs = xl_adapter_pipeline(xl_parts, xl_adapter)(test_sdxl.PROMPT, negative_prompt=test_sdxl.NEGATIVE, image=image.pixels.permute(0, 3, 1, 2),
                  height=test_sdxl.SIZE, width=test_sdxl.SIZE, num_inference_steps=test_sdxl.STEPS,
                  guidance_scale=test_sdxl.CFG, generator=generator(11), output_type="pt",
                  adapter_conditioning_scale=0.9, adapter_conditioning_factor=end).images
    assert_same_pixels(ours, channels_last(theirs))


def test_sdxl_end_percent_counts(xl_parts, xl_adapter):
    """Guards the end_percent parity test: the last steps change this random model's picture little, but a hundred
    times more than the parity tolerance."""
    image = control_image(4, test_sdxl.SIZE)
    full, half = (sdxl_sample(xl_parts, xl_adapter, image, seed=11, strength=0.9, end=end) for end in (1.0, 0.5))
    assert (full - half).abs().max() > 1e-3


def test_sdxl_adapter_changes_the_picture(xl_parts, xl_adapter):
    image = control_image(4, test_sdxl.SIZE)
    adapted = sdxl_sample(xl_parts, xl_adapter, image, seed=11, strength=0.9, end=1.0)
    plain = sdxl_sample(xl_parts, xl_adapter, image, seed=11, strength=0.0, end=1.0)
    assert (adapted - plain).abs().max() > 0.05


def test_a_controlnet_and_an_adapter_combine(sd_model, sd_clip, sd_vae, sd_adapters):
    """The UNet takes both: the picture with both differs from the picture with either alone."""
    from nodes.builtin_models import build_tiny_controlnet
    from nodes.controlnet import ApplyControlNet
    from nodes.values import ControlNet

    control_net, image = ControlNet(build_tiny_controlnet(), "sd1", "tiny"), control_image(6)

    def controlled(positive, negative):
        return run_node(ApplyControlNet, positive=positive, negative=negative, control_net=control_net, image=image)

    adapted = with_adapters([(sd_adapters[0], control_image(7), 1.0, 1.0)])
    pictures = [run_nodes(sd_model, sd_clip, sd_vae, "euler", seed=8, condition=c)
                for c in (controlled, adapted, lambda p, n: adapted(*controlled(p, n)))]
    assert (pictures[2] - pictures[0]).abs().max() > 0.05 and (pictures[2] - pictures[1]).abs().max() > 0.05


def test_sd1_layout_adapter_on_an_sd1_layout_unet_matches_the_pipeline(tiny_parts, sd_clip, sd_vae):
    """Real SD 1.x UNets have attention in their first block, and their adapters (full_adapter) a feature at the
    latent's size: a tiny UNet of that layout and the adapter adapter_config_for gives it."""
    from diffusers import UNet2DConditionModel

    from nodes.values import Model

    torch.manual_seed(5)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4,
                                out_channels=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32).eval()
    parts = {**tiny_parts, "unet": unet}
    adapter = T2IAdapter(build_tiny_adapter(unet.config, tiny_parts["vae"].config, seed=6), "sd1-layout")
    assert adapter.module.config.adapter_type == "full_adapter"
    model = Model(unet, scheduler_config=dict(tiny_parts["scheduler"].config), family="sd1", prediction_type="epsilon",
                  name="sd1-layout")
    image = control_image(8)
    ours = run_nodes(model, sd_clip, sd_vae, "euler", seed=4, condition=with_adapters([(adapter, image, 1.0, 1.0)]))
    plain = run_nodes(model, sd_clip, sd_vae, "euler", seed=4)
    assert (ours - plain).abs().max() > 0.05
    assert_same_pixels(ours, theirs_sd(parts, [adapter], [image], "euler", 4, [1.0]))


def test_a_stopped_sdxl_schedule_counts_the_steps_it_runs(xl_parts, xl_adapter):
    """With denoising_end the factor is a share of the steps run (the pipeline's truncated num_inference_steps)."""
    image = control_image(5, test_sdxl.SIZE)
    ours = sdxl_sample(xl_parts, xl_adapter, image, seed=12, strength=1.0, end=0.5, denoising_end=0.7, decode=False)
    theirs = xl_adapter_pipeline(xl_parts, xl_adapter)(
        test_sdxl.PROMPT, negative_prompt=test_sdxl.NEGATIVE, image=image.pixels.permute(0, 3, 1, 2),
        height=test_sdxl.SIZE, width=test_sdxl.SIZE, num_inference_steps=test_sdxl.STEPS, guidance_scale=test_sdxl.CFG,
        generator=generator(12), output_type="latent", adapter_conditioning_factor=0.5, denoising_end=0.7).images
    assert ours.shape == theirs.shape and ours.std() > 0.01
    assert (ours - theirs).abs().max().item() <= 1e-5
