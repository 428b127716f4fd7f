"""Schedule, AddNoise and Sample on their own (pixel parity with diffusers is in test_parity.py)."""
import pytest
import torch
from pydantic import ValidationError

from graphflow.errors import Cancelled, NodeInputError
from graphflow.node import spec_of
from graphflow.seeds import seed_inputs
from nodes.latent import EmptyLatent
from nodes.sampling import SAMPLERS, AddNoise, Sample, SamplerName, Schedule, fresh_scheduler
from nodes.text import TextEncode
from nodes.values import Conditioning, Latent
from tests.nodes.runctx import make_ctx, run_node


@pytest.fixture(scope="module")
def prompts(sd_clip):
    return run_node(TextEncode, clip=sd_clip, text="a lighthouse at dusk"), run_node(TextEncode, clip=sd_clip, text="")


@pytest.fixture
def empty(sd_vae):
    return run_node(EmptyLatent, width=64, height=64, vae=sd_vae)


def clean_latent(seed=0):
    return Latent(samples=torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(seed)))


# ----------------------------------------------------------------------------------------------- Schedule


def test_sampler_table_and_enum_agree():
    assert set(SamplerName.__args__) == set(SAMPLERS)
    for required in ("euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "dpmpp_2m_sde_karras", "ddim", "pndm", "lms",
                     "lms_karras", "heun", "dpm2", "dpm2_a", "unipc"):
        assert required in SAMPLERS and SAMPLERS[required].a1111


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_schedule_builds_the_tabled_scheduler_with_its_overrides(sd_model, sampler):
    schedule = run_node(Schedule, model=sd_model, sampler=sampler, steps=6)
    spec = SAMPLERS[sampler]
    assert schedule.scheduler_class == spec.scheduler_class
    for key, value in spec.overrides.items():
        assert schedule.scheduler_config[key] == value
    assert schedule.scheduler_config["beta_schedule"] == "scaled_linear"  # the model's training schedule is kept
    rebuilt = fresh_scheduler(schedule)
    assert type(rebuilt).__name__ == spec.scheduler_class
    assert torch.equal(rebuilt.timesteps, schedule.timesteps)


def test_overrides_win_over_a_saved_configs_defaults_list(sd_model):
    # A saved config lists the keys it left at their defaults; merged into that dict, an override would be reset.
    config = {**sd_model.scheduler_config, "use_karras_sigmas": False, "_use_default_values": ["use_karras_sigmas"]}
    model = sd_model.replace(scheduler_config=config)
    schedule = run_node(Schedule, model=model, sampler="dpmpp_2m_karras", steps=6)
    assert schedule.scheduler_config["use_karras_sigmas"] is True
    assert fresh_scheduler(schedule).config.use_karras_sigmas is True


def test_the_models_prediction_type_wins_over_its_scheduler_config(sd_model):
    # a loader may override what an SD 2.x checkpoint predicts; the scheduler must follow the MODEL
    v_model = sd_model.replace(prediction_type="v_prediction")
    assert sd_model.scheduler_config["prediction_type"] == "epsilon"
    schedule = run_node(Schedule, model=v_model, sampler="euler", steps=4)
    assert fresh_scheduler(schedule).config.prediction_type == "v_prediction"


@pytest.mark.parametrize("steps,denoise,start", [(8, 1.0, 0), (8, 0.75, 2), (8, 0.3, 6), (10, 0.55, 5), (8, 0.0, 8),
                                                 (8, 0.1, 8)])
def test_start_index_follows_img2img_get_timesteps(sd_model, steps, denoise, start):
    schedule = run_node(Schedule, model=sd_model, sampler="euler", steps=steps, denoise=denoise)
    assert schedule.start_index == start
    assert len(fresh_scheduler(schedule).timesteps[schedule.start_index:]) == steps - start  # what Sample runs


def test_start_index_counts_scheduler_order(sd_model):
    schedule = run_node(Schedule, model=sd_model, sampler="heun", steps=8, denoise=0.5)  # Heun: 2 evaluations per step
    assert schedule.start_index == 4 * 2


@pytest.mark.parametrize("bad", [{"steps": 0}, {"steps": -3}, {"steps": 1001}, {"denoise": 1.5}, {"denoise": -0.1},
                                 {"sampler": "euler_ancestral"}, {"sampler": "Euler a"}, {"steps": "20"}])
def test_schedule_rejects_bad_literals(bad):
    with pytest.raises(ValidationError):
        spec_of(Schedule).literals.model_validate(bad)


def test_seed_bounds():
    """AddNoise: 0 … 2**64-1, or -1 / "random" (drawn by the engine); Sample: -1 continues AddNoise's stream,
    only "random" draws."""
    for good in (0, 2**64 - 1, -1, "random"):
        assert spec_of(AddNoise).literals.model_validate({"seed": good})
    for bad in (-2, 2**64, "rand", True, 1.0):
        with pytest.raises(ValidationError):
            spec_of(AddNoise).literals.model_validate({"seed": bad})
    assert spec_of(Sample).literals.model_validate({"seed": -1}) and spec_of(Sample).literals.model_validate({"seed": "random"})
    with pytest.raises(ValidationError):
        spec_of(Sample).literals.model_validate({"seed": -2})
    assert seed_inputs(spec_of(AddNoise)) == {"seed": {"random": [-1, "random"], "maximum": 2**64 - 1}}
    assert seed_inputs(spec_of(Sample))["seed"]["random"] == ["random"]


# ----------------------------------------------------------------------------------------------- AddNoise


def test_add_noise_to_an_empty_latent_is_txt2img_prepare_latents(sd_model, empty):
    schedule = run_node(Schedule, model=sd_model, sampler="euler", steps=8)
    noised = run_node(AddNoise, latent=empty, schedule=schedule, seed=123)
    generator = torch.Generator("cpu").manual_seed(123)
    noise = torch.randn(1, 4, 32, 32, generator=generator)
    sigma = fresh_scheduler(schedule).init_noise_sigma
    assert sigma > 1
    assert torch.equal(noised.noise, noise)
    assert torch.equal(noised.samples, noise * sigma)
    assert torch.equal(noised.rng_state, generator.get_state()), "the state after drawing the noise, to continue from"
    assert noised.schedule is schedule and noised.clean is empty.samples


def test_add_noise_to_an_image_latent_is_img2img(sd_model):
    clean = clean_latent()
    schedule = run_node(Schedule, model=sd_model, sampler="euler", steps=8, denoise=0.5)
    noised = run_node(AddNoise, latent=clean, schedule=schedule, seed=9)
    scheduler = fresh_scheduler(schedule)
    t = scheduler.timesteps[schedule.start_index:schedule.start_index + 1]
    assert torch.equal(noised.samples, scheduler.add_noise(clean.samples, noised.noise, t))


def test_non_empty_latent_at_full_denoise_follows_img2img_strength_1(sd_model, empty):
    schedule = run_node(Schedule, model=sd_model, sampler="ddim", steps=8, denoise=1.0)
    clean = clean_latent()
    noised = run_node(AddNoise, latent=clean, schedule=schedule, seed=9)
    scheduler = fresh_scheduler(schedule)
    assert torch.equal(noised.samples, scheduler.add_noise(clean.samples, noised.noise, scheduler.timesteps[:1]))
    from_empty = run_node(AddNoise, latent=empty, schedule=schedule, seed=9)
    assert torch.equal(from_empty.samples, from_empty.noise * scheduler.init_noise_sigma)


def test_add_noise_refuses_an_already_noised_latent(sd_model, empty):
    schedule = run_node(Schedule, model=sd_model, steps=4)
    noised = run_node(AddNoise, latent=empty, schedule=schedule, seed=1)
    with pytest.raises(NodeInputError) as error:
        run_node(AddNoise, latent=noised, schedule=schedule, seed=1)
    assert error.value.input == "latent"


def test_seed_changes_noise_and_same_seed_repeats(sd_model, empty):
    schedule = run_node(Schedule, model=sd_model, steps=4)
    a, b, c = (run_node(AddNoise, latent=empty, schedule=schedule, seed=s).samples for s in (5, 5, 6))
    assert torch.equal(a, b) and not torch.equal(a, c)


# ----------------------------------------------------------------------------------------------- Sample


def sample(model, prompts, latent, ctx=None, **literals):
    """Sample's `latent` output (the `previews` output has its own tests below)."""
    positive, negative = prompts
    return run_node(Sample, ctx=ctx, model=model, positive=positive, negative=negative, latent=latent, **literals)[0]


def test_sample_needs_a_noised_latent(sd_model, prompts, empty):
    with pytest.raises(NodeInputError) as error:
        sample(sd_model, prompts, empty)
    assert error.value.input == "latent" and "AddNoise" in error.value.message


def test_guidance_needs_a_negative_but_cfg_1_does_not(sd_model, prompts, empty):
    noised = run_node(AddNoise, latent=empty, schedule=run_node(Schedule, model=sd_model, steps=2), seed=0)
    with pytest.raises(NodeInputError) as error:
        run_node(Sample, model=sd_model, positive=prompts[0], latent=noised, cfg=7.0)
    assert error.value.input == "negative"
    out, _ = run_node(Sample, model=sd_model, positive=prompts[0], latent=noised, cfg=1.0)
    assert out.samples.shape == empty.samples.shape


def test_result_is_a_clean_latent(sd_model, prompts, empty):
    noised = run_node(AddNoise, latent=empty, schedule=run_node(Schedule, model=sd_model, steps=2), seed=0)
    out = sample(sd_model, prompts, noised)
    assert out.schedule is None and out.noise is None and out.rng_state is None
    assert torch.isfinite(out.samples).all() and not torch.equal(out.samples, noised.samples)


def test_progress_once_per_remaining_step(sd_model, prompts, tmp_path):
    ctx, recorder = make_ctx(tmp_path)
    noised = run_node(AddNoise, latent=clean_latent(), schedule=run_node(Schedule, model=sd_model, steps=8, denoise=0.5), seed=0)
    sample(sd_model, prompts, noised, ctx=ctx)
    assert recorder.progress == [(i, 4) for i in range(1, 5)]


def test_cancel_stops_between_steps(sd_model, prompts, empty, tmp_path):
    ctx, recorder = make_ctx(tmp_path, cancel_after_progress=2)
    noised = run_node(AddNoise, latent=empty, schedule=run_node(Schedule, model=sd_model, steps=6), seed=0)
    with pytest.raises(Cancelled):
        sample(sd_model, prompts, noised, ctx=ctx)
    assert len(recorder.progress) == 2


def test_zero_denoise_returns_the_input(sd_model, prompts):
    clean = clean_latent()
    noised = run_node(AddNoise, latent=clean, schedule=run_node(Schedule, model=sd_model, steps=8, denoise=0.0), seed=0)
    assert torch.equal(noised.samples, clean.samples)
    assert torch.equal(sample(sd_model, prompts, noised).samples, clean.samples)


def test_explicit_seed_starts_a_new_stream(sd_model, prompts, empty):
    noised = run_node(AddNoise, latent=empty, schedule=run_node(Schedule, model=sd_model, sampler="euler_a", steps=3), seed=0)
    continued = sample(sd_model, prompts, noised, seed=-1).samples
    fresh_a = sample(sd_model, prompts, noised, seed=77).samples
    fresh_b = sample(sd_model, prompts, noised, seed=77).samples
    assert torch.equal(fresh_a, fresh_b)
    assert not torch.equal(continued, fresh_a)


def test_sampling_is_deterministic(sd_model, prompts, empty):
    def run():
        schedule = run_node(Schedule, model=sd_model, sampler="dpmpp_2m_sde_karras", steps=3)
        return sample(sd_model, prompts, run_node(AddNoise, latent=empty, schedule=schedule, seed=31)).samples

    assert torch.equal(run(), run())


def test_conditioning_batches_spread_over_the_latent_batch(sd_model, prompts, sd_vae):
    batch = run_node(EmptyLatent, width=64, height=64, batch_size=3, vae=sd_vae)
    noised = run_node(AddNoise, latent=batch, schedule=run_node(Schedule, model=sd_model, steps=1), seed=0)
    two_prompts = Conditioning(embeds=torch.cat([prompts[0].embeds] * 2))
    with pytest.raises(NodeInputError) as error:
        run_node(Sample, model=sd_model, positive=two_prompts, negative=prompts[1], latent=noised)
    assert error.value.input == "positive"


def test_conditioning_from_another_model_is_refused(sd_model, prompts, empty):
    noised = run_node(AddNoise, latent=empty, schedule=run_node(Schedule, model=sd_model, steps=1), seed=0)
    wide = Conditioning(embeds=torch.zeros(1, 77, 768))
    with pytest.raises(NodeInputError) as error:
        run_node(Sample, model=sd_model, positive=wide, negative=prompts[1], latent=noised)
    assert error.value.input == "positive" and error.value.expected == 32


def test_sampling_nodes_leave_inputs_untouched(sd_model, prompts, sd_vae):
    for sampler in ("euler_a", "dpmpp_2m", "pndm", "heun"):
        latent = clean_latent()
        digests = [v.__graphflow_digest__() for v in (sd_model, latent, *prompts)]
        schedule = run_node(Schedule, model=sd_model, sampler=sampler, steps=3, denoise=0.7)
        schedule_digest = schedule.__graphflow_digest__()
        noised = run_node(AddNoise, latent=latent, schedule=schedule, seed=4)
        noised_digest = noised.__graphflow_digest__()
        sample(sd_model, prompts, noised)
        assert [v.__graphflow_digest__() for v in (sd_model, latent, *prompts)] == digests
        assert schedule.__graphflow_digest__() == schedule_digest
        assert noised.__graphflow_digest__() == noised_digest, sampler


# ----------------------------------------------------------------------------------------------- uneven CFG lengths


LONG_PROMPT = ", ".join(f"a lighthouse number {i} at dusk" for i in range(20))  # well over 75 tokens


def test_a_long_positive_is_guided_against_a_padded_negative(sd_model, sd_clip, empty):
    positive = run_node(TextEncode, clip=sd_clip, text=LONG_PROMPT)
    negative = run_node(TextEncode, clip=sd_clip, text="")
    assert positive.embeds.shape[1] == 2 * negative.embeds.shape[1]
    padded = Conditioning(embeds=torch.cat([negative.embeds, negative.empty_chunk], dim=1))
    noised = run_node(AddNoise, latent=empty, schedule=run_node(Schedule, model=sd_model, steps=2), seed=0)
    uneven = sample(sd_model, (positive, negative), noised).samples
    by_hand = sample(sd_model, (positive, padded), noised).samples
    assert torch.equal(uneven, by_hand)
    assert torch.equal(sample(sd_model, (negative, positive), noised).samples,
                       sample(sd_model, (Conditioning(embeds=padded.embeds), positive), noised).samples)


def test_uneven_lengths_without_an_empty_chunk_are_an_input_error(sd_model, sd_clip, empty):
    positive = run_node(TextEncode, clip=sd_clip, text=LONG_PROMPT)
    bare_negative = Conditioning(embeds=run_node(TextEncode, clip=sd_clip, text="").embeds)
    noised = run_node(AddNoise, latent=empty, schedule=run_node(Schedule, model=sd_model, steps=1), seed=0)
    with pytest.raises(NodeInputError) as error:
        sample(sd_model, (positive, bare_negative), noised)
    assert error.value.input == "negative"


# ----------------------------------------------------------------------------------------------- previews


def sample_with_previews(model, prompts, latent, ctx=None, **literals):
    positive, negative = prompts
    return run_node(Sample, ctx=ctx, model=model, positive=positive, negative=negative, latent=latent, **literals)


def test_previews_every_n_steps_and_the_last(sd_model, prompts, empty, sd_vae, tmp_path):
    from PIL import Image as PILImage
    import io

    ctx, recorder = make_ctx(tmp_path)
    noised = run_node(AddNoise, latent=empty, schedule=run_node(Schedule, model=sd_model, sampler="euler", steps=5), seed=0)
    _, previews = sample_with_previews(sd_model, prompts, noised, ctx=ctx, preview_every=2, vae=sd_vae)
    assert [event.step for event in recorder.previews] == [2, 4, 5]
    assert previews.pixels.shape == (3, 64, 64, 3)  # latent_rgb enlarged by the VAE's factor (2 for the tiny one)
    for event in recorder.previews:
        assert PILImage.open(io.BytesIO(event.image_png)).format == "PNG"
    assert len({frame.sum().item() for frame in previews.pixels}) == 3, "every frame shows a different step"


def test_the_last_frame_is_the_result(sd_model, prompts, empty, sd_vae):
    # DPM++ 2M offers no prediction of the finished latent, so its frames show the latents themselves
    from nodes.preview import upscaled_latent_rgb
    from nodes.vae import VAEDecode

    noised = run_node(AddNoise, latent=empty, schedule=run_node(Schedule, model=sd_model, sampler="dpmpp_2m", steps=4), seed=0)
    result, rgb = sample_with_previews(sd_model, prompts, noised, preview_every=3, vae=sd_vae)
    assert rgb.batch_size == 2 and torch.equal(rgb.pixels[-1:], upscaled_latent_rgb(result.samples, 2))
    result, decoded = sample_with_previews(sd_model, prompts, noised, preview_every=3, preview_mode="vae", vae=sd_vae)
    assert decoded.batch_size == 2 and torch.equal(decoded.pixels[-1:], run_node(VAEDecode, vae=sd_vae, latent=result).pixels)


def test_previews_off_give_one_frame_of_the_result(sd_model, prompts, empty, tmp_path):
    from nodes.preview import upscaled_latent_rgb

    ctx, recorder = make_ctx(tmp_path)
    noised = run_node(AddNoise, latent=empty, schedule=run_node(Schedule, model=sd_model, steps=2), seed=0)
    result, previews = sample_with_previews(sd_model, prompts, noised, ctx=ctx)
    assert not recorder.previews
    assert torch.equal(previews.pixels, upscaled_latent_rgb(result.samples, 8))  # no VAE: SD's factor 8
    nothing_to_do = run_node(AddNoise, latent=clean_latent(), schedule=run_node(Schedule, model=sd_model, steps=4, denoise=0.0), seed=0)
    _, previews = sample_with_previews(sd_model, prompts, nothing_to_do, preview_every=1)
    assert previews.batch_size == 1


def test_a_batch_is_one_grid_per_frame(sd_model, prompts, sd_vae):
    batch = run_node(EmptyLatent, width=64, height=64, batch_size=2, vae=sd_vae)
    noised = run_node(AddNoise, latent=batch, schedule=run_node(Schedule, model=sd_model, steps=2), seed=0)
    _, previews = sample_with_previews(sd_model, prompts, noised, preview_every=1, vae=sd_vae)
    assert previews.pixels.shape == (2, 64, 128, 3)


def test_vae_previews_need_a_vae(sd_model, prompts, empty):
    noised = run_node(AddNoise, latent=empty, schedule=run_node(Schedule, model=sd_model, steps=2), seed=0)
    with pytest.raises(NodeInputError) as error:
        sample_with_previews(sd_model, prompts, noised, preview_every=1, preview_mode="vae")
    assert error.value.input == "vae"


def test_previews_do_not_change_the_result(sd_model, prompts, empty, sd_vae):
    noised = run_node(AddNoise, latent=empty, schedule=run_node(Schedule, model=sd_model, sampler="euler_a", steps=3), seed=0)
    plain = sample(sd_model, prompts, noised).samples
    watched = sample(sd_model, prompts, noised, preview_every=1, preview_mode="vae", vae=sd_vae).samples
    assert torch.equal(plain, watched)


# one sampler per scheduler class whose step draws from the generator, and a deterministic one
@pytest.mark.parametrize("sampler", ["euler", "euler_a", "dpm2_a", "dpmpp_2m_sde", "ddim"])
def test_seed_plus_index_batch_gives_each_image_its_own_seeds_picture(sd_model, prompts, sd_vae, sampler):
    """AUTOMATIC1111's batches: image i of a batch is the image seed + i gives alone — for the ancestral and
    SDE samplers too (and DDIM at eta 0.5), which draw fresh noise at each step from the image's own stream."""
    positive, negative = prompts
    schedule = run_node(Schedule, model=sd_model, sampler=sampler, steps=4)

    def sampled(batch_size, seed, batch_seeds):
        empty = run_node(EmptyLatent, width=64, height=64, batch_size=batch_size, vae=sd_vae)
        noised = run_node(AddNoise, latent=empty, schedule=schedule, seed=seed, batch_seeds=batch_seeds)
        latent, _ = run_node(Sample, model=sd_model, positive=positive, negative=negative, latent=noised, cfg=5.0, eta=0.5)
        return latent.samples

    batch = sampled(3, 11, "seed_plus_index")
    for i in range(3):
        alone = sampled(1, 11 + i, "seed_plus_index")
        assert torch.allclose(batch[i:i + 1], alone, atol=1e-4), f"image {i} differs from seed {11 + i} alone"
    one_stream = sampled(3, 11, "one_stream")
    assert not torch.allclose(one_stream[1:2], batch[1:2], atol=1e-2)  # one stream for the batch is not seed + i
