"""comfy.KSampler / comfy.KSamplerAdvanced: ComfyUI's sampling over graphflow's MODEL and LATENT.

The end-to-end runs use the built-in tiny model through the Engine; the step-level checks use a model whose
prediction is known in closed form, so what the node runs can be recomputed by hand."""
import math

import pytest
import torch

from graphflow import Engine, Settings
from graphflow.errors import NodeInputError
from nodes.ksamplers import sample_euler
from nodes.ksigmas import DiscreteSigmas, initial_noise, ksampler_sigmas
from nodes.values import Conditioning, Latent, Model
from nodes.comfy.ksampler import sample_latent


def workflow(sampler="euler", scheduler="normal", steps=3, denoise=1.0, seed=7, cfg=6.0):
    def link(node, output):
        return {"from": node, "output": output}

    return {"graphflow": 1, "nodes": {
        "ckpt": {"type": "LoadCheckpoint", "inputs": {"name": "tiny-sd"}},
        "pos": {"type": "comfy.CLIPTextEncode", "inputs": {"text": "a (red:1.2) cat", "clip": link("ckpt", "clip")}},
        "neg": {"type": "comfy.CLIPTextEncode", "inputs": {"text": "", "clip": link("ckpt", "clip")}},
        "empty": {"type": "EmptyLatent", "inputs": {"width": 64, "height": 64, "batch_size": 1,
                                                "vae": link("ckpt", "vae")}},
        "ks": {"type": "comfy.KSampler", "inputs": {
            "model": link("ckpt", "model"), "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler,
            "scheduler": scheduler, "positive": link("pos", "CONDITIONING"), "negative": link("neg", "CONDITIONING"),
            "latent_image": link("empty", "latent"), "denoise": denoise}},
        "decode": {"type": "VAEDecode", "inputs": {"vae": link("ckpt", "vae"), "latent": link("ks", "LATENT")}},
        "save": {"type": "SaveImage", "inputs": {"images": link("decode", "image"), "filename_prefix": "comfy"}},
    }}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    root = tmp_path_factory.mktemp("comfy-ksampler")
    return Engine(settings=Settings(models_dir=root / "models", input_dir=root / "in", output_dir=root / "out"),
                  check_mutations=True)


@pytest.mark.parametrize("sampler", ["euler", "euler_ancestral", "dpmpp_2m_sde", "uni_pc"])
def test_ksampler_runs_end_to_end_on_the_builtin_model_and_repeats_for_a_seed(engine, sampler):
    first = engine.run(workflow(sampler)).values["ks"]["LATENT"].samples
    again = engine.run(workflow(sampler, cfg=6.0 + 1e-9)).values["ks"]["LATENT"].samples  # not from the cache
    other = engine.run(workflow(sampler, seed=8)).values["ks"]["LATENT"].samples
    assert first.shape == (1, 4, 32, 32) and torch.isfinite(first).all()
    assert torch.allclose(first, again, atol=1e-4)
    assert not torch.allclose(first, other, atol=1e-2)
    image = engine.run(workflow(sampler)).values["decode"]["image"].pixels
    assert image.shape == (1, 64, 64, 3)


class Affine:
    """A stand-in UNet whose epsilon prediction is ``k · input`` whatever the timestep and prompt."""

    def __init__(self, k: float):
        self.k = k
        self.config = type("Config", (), {"in_channels": 4, "cross_attention_dim": 8})()
        self.calls = []
        self._weight = torch.nn.Parameter(torch.zeros(1))

    def parameters(self):
        return iter([self._weight])

    def __call__(self, sample, timestep, encoder_hidden_states, return_dict=False):
        self.calls.append((sample.shape[0], timestep.clone(), encoder_hidden_states.shape))
        return (self.k * sample,)


CONFIG = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000}


def affine_model(k=0.5, prediction_type="epsilon"):
    return Model(Affine(k), CONFIG, "sd1", prediction_type, "affine")


def cond(value=1.0, length=77):
    return Conditioning(embeds=torch.full((1, length, 8), value))


class Ctx:
    def __init__(self):
        self.steps, self.previews = [], []

    def progress(self, value, maximum):
        self.steps.append((value, maximum))

    def preview(self, png, step):
        self.previews.append((png[:8], step))


def test_previews_show_the_prediction_at_most_twice_a_second(monkeypatch):
    import nodes.comfy.ksampler as ksampler

    monkeypatch.setattr(ksampler, "PREVIEW_EVERY_S", 0.0)
    ctx = Ctx()
    sample_latent(affine_model(), 1, 4, 1.0, "euler", "normal", cond(), cond(), Latent(torch.zeros(1, 4, 8, 8)), ctx)
    assert ctx.previews == [(b"\x89PNG\r\n\x1a\n", step) for step in (1, 2, 3)]  # none for the finished result
    monkeypatch.setattr(ksampler, "PREVIEW_EVERY_S", 3600.0)
    ctx = Ctx()
    sample_latent(affine_model(), 1, 4, 1.0, "euler", "normal", cond(), cond(), Latent(torch.zeros(1, 4, 8, 8)), ctx)
    assert ctx.previews == []


def test_ksampler_noises_with_the_seed_and_steps_with_the_formula():
    """With eps = k·x/sqrt(σ²+1) the denoised latent is x(1 - kσ/sqrt(σ²+1)); Euler by hand gives the result."""
    k, steps, seed = 0.5, 4, 123
    latent = Latent(torch.zeros(1, 4, 8, 8))
    ctx = Ctx()
    out = sample_latent(affine_model(k), seed, steps, 8.0, "euler", "karras", cond(1.0), cond(0.0), latent, ctx)
    sigmas = ksampler_sigmas(DiscreteSigmas.from_config(CONFIG), "karras", "euler", steps)
    x = initial_noise((1, 4, 8, 8), seed) * torch.sqrt(1.0 + sigmas[0] ** 2)
    for i in range(steps):
        s = float(sigmas[i])
        denoised = x * (1 - k * s / math.sqrt(s * s + 1))
        x = x + (x - denoised) / s * (float(sigmas[i + 1]) - s)
    assert torch.allclose(out.samples, x, rtol=1e-4, atol=1e-5)
    assert ctx.steps == [(i + 1, steps) for i in range(steps)]


def test_cfg_1_runs_the_positive_only_and_cfg_above_batches_negative_first():
    model = affine_model()
    sample_latent(model, 0, 2, 1.0, "euler", "normal", cond(1.0), cond(0.0), Latent(torch.zeros(1, 4, 8, 8)), Ctx())
    assert [c[0] for c in model.unet.calls] == [1, 1]
    model = affine_model()
    sample_latent(model, 0, 1, 7.0, "euler", "normal", cond(1.0), cond(0.0), Latent(torch.zeros(1, 4, 8, 8)), Ctx())
    assert [c[0] for c in model.unet.calls] == [2]
    (batch, timestep, context), = model.unet.calls
    assert timestep.tolist() == [999.0, 999.0]  # the training step nearest to the first sigma


def test_denoise_below_one_keeps_the_tail_of_a_longer_schedule_and_starts_from_the_latent():
    model_sigmas = DiscreteSigmas.from_config(CONFIG)
    full = ksampler_sigmas(model_sigmas, "normal", "euler", 10)
    half = ksampler_sigmas(model_sigmas, "normal", "euler", 5, denoise=0.5)
    assert torch.equal(half, full[-6:])
    latent = Latent(torch.ones(1, 4, 8, 8))
    out = sample_latent(affine_model(0.0), 3, 5, 1.0, "euler", "normal", cond(), cond(), latent, Ctx(), denoise=0.5)
    # k = 0: the model predicts x itself as clean, so Euler keeps x; x started as latent + noise·σ0 (not the max)
    expected = torch.ones(1, 4, 8, 8) + initial_noise((1, 4, 8, 8), 3) * half[0]
    assert torch.allclose(out.samples, expected, atol=1e-5)


def test_advanced_window_and_leftover_noise():
    latent = Latent(torch.zeros(1, 4, 8, 8))
    model = affine_model(0.0)
    left = sample_latent(model, 1, 6, 1.0, "euler", "normal", cond(), cond(), latent, Ctx(), start_step=0,
                         last_step=3, force_full_denoise=False)
    assert len(model.unet.calls) == 3
    unchanged = sample_latent(model, 1, 6, 1.0, "euler", "normal", cond(), cond(), latent, Ctx(), start_step=6)
    assert unchanged.samples is latent.samples
    quiet = sample_latent(affine_model(0.0), 1, 6, 1.0, "euler", "normal", cond(), cond(), Latent(torch.ones(1, 4, 8, 8)),
                          Ctx(), add_noise=False, start_step=2)
    assert torch.equal(quiet.samples, torch.ones(1, 4, 8, 8))  # zero noise and a model that predicts x: x stays
    assert left.samples.abs().mean() > 1  # stopped at step 3 of 6 with its noise


def test_v_prediction_denoised_formula():
    from nodes.comfy.guidance import ComfyDenoiser

    model = affine_model(0.5, "v_prediction")
    denoiser = ComfyDenoiser(model, cond(), cond(), 1.0)
    x, sigma = torch.randn(1, 4, 8, 8), torch.tensor([2.0])
    v = 0.5 * x / math.sqrt(5.0)
    assert torch.allclose(denoiser(x, sigma), x / 5.0 - v * 2.0 / math.sqrt(5.0), atol=1e-6)


def test_a_noised_latent_or_an_inpainting_unet_is_refused_by_name():
    from nodes.values import ScheduleValue

    schedule = ScheduleValue("euler", 1, 1.0, "EulerDiscreteScheduler", {}, torch.zeros(1), 0)
    noised = Latent(torch.zeros(1, 4, 8, 8), schedule=schedule)
    with pytest.raises(NodeInputError) as error:
        sample_latent(affine_model(), 0, 2, 7.0, "euler", "normal", cond(), cond(), noised, Ctx())
    assert error.value.input == "latent_image"
    with pytest.raises(NodeInputError) as error:
        sample_latent(affine_model(), 0, 2, 7.0, "euler", "normal", cond(), cond(), Latent(torch.zeros(1, 9, 8, 8)), Ctx())
    assert error.value.input == "model"
    wide = Conditioning(embeds=torch.zeros(1, 77, 16))
    with pytest.raises(NodeInputError) as error:
        sample_latent(affine_model(), 0, 2, 7.0, "euler", "normal", cond(), wide, Latent(torch.zeros(1, 4, 8, 8)), Ctx())
    assert error.value.input == "negative"


def test_inpainting_keeps_the_unmasked_latent():
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :, :4] = 1
    latent = Latent(torch.full((1, 4, 8, 8), 0.25), noise_mask=mask)
    out = sample_latent(affine_model(0.3), 5, 4, 1.0, "euler", "normal", cond(), cond(), latent, Ctx())
    assert torch.allclose(out.samples[..., 4:], torch.full((1, 4, 8, 4), 0.25), atol=1e-5)
    assert not torch.allclose(out.samples[..., :4], torch.full((1, 4, 8, 4), 0.25), atol=1e-2)
    assert out.noise_mask is mask


def test_sampler_function_is_what_the_node_runs():
    """The node's euler run equals sample_euler over the same denoiser and start."""
    from nodes.comfy.guidance import ComfyDenoiser

    model = affine_model(0.4)
    out = sample_latent(model, 9, 3, 5.0, "euler", "simple", cond(1.0), cond(0.5), Latent(torch.zeros(1, 4, 8, 8)), Ctx())
    sigmas = ksampler_sigmas(DiscreteSigmas.from_config(CONFIG), "simple", "euler", 3)
    x = initial_noise((1, 4, 8, 8), 9) * torch.sqrt(1.0 + sigmas[0] ** 2)
    expected = sample_euler(ComfyDenoiser(model, cond(1.0), cond(0.5), 5.0), x, sigmas)
    assert torch.equal(out.samples, expected)



def test_euler_cfg_pp_runs_the_negative_even_at_cfg_1():
    model = affine_model()
    out = sample_latent(model, 0, 2, 1.0, "euler_cfg_pp", "normal", cond(1.0), cond(0.0), Latent(torch.zeros(1, 4, 8, 8)), Ctx())
    assert [c[0] for c in model.unet.calls] == [2, 2]  # both sides in each step's batch, as ComfyUI's CFG++ asks
    euler = sample_latent(affine_model(), 0, 2, 1.0, "euler", "normal", cond(1.0), cond(0.0), Latent(torch.zeros(1, 4, 8, 8)), Ctx())
    assert torch.allclose(out.samples, euler.samples, atol=1e-5)  # a prompt-blind model: the negative's direction is Euler's


@pytest.mark.parametrize("sampler", ["euler_cfg_pp", "dpmpp_3m_sde", "ddpm", "lcm"])
@pytest.mark.parametrize("scheduler", ["beta", "linear_quadratic", "kl_optimal"])
def test_the_newer_samplers_and_schedulers_run_masked_and_repeat_for_a_seed(sampler, scheduler):
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4] = 1
    latent = Latent(torch.full((1, 4, 8, 8), 0.25), noise_mask=mask)
    first = sample_latent(affine_model(0.3), 5, 4, 6.0, sampler, scheduler, cond(1.0), cond(0.0), latent, Ctx())
    again = sample_latent(affine_model(0.3), 5, 4, 6.0, sampler, scheduler, cond(1.0), cond(0.0), latent, Ctx())
    assert torch.isfinite(first.samples).all() and torch.equal(first.samples, again.samples)
    assert torch.allclose(first.samples[..., 4:], torch.full((1, 4, 8, 4), 0.25), atol=1e-5)
