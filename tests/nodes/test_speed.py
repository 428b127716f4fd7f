"""nodes/speed.py: LoadCheckpoint's attention kernels, CPU offload and torch.compile of the UNet.

This machine has no GPU: offload runs here with the CPU as its "accelerator" (nothing moves, the hooks and results
are checked) and with the meta device (the weights do move, their tensors at rest come back)."""
import pytest
import torch

from graphflow import Engine
from graphflow.cache import ResultCache
from graphflow.context import Settings
from graphflow.errors import NodeInputError
from nodes import speed
from nodes.latent import EmptyLatent
from nodes.loaders import LoadCheckpoint
from nodes.patching import clone_with_weights
from nodes.sampling import AddNoise, Sample, Schedule
from nodes.text import TextEncode
from nodes.vae import VAEDecode

from .runctx import run_node

META = torch.device("meta")
CPU = torch.device("cpu")


def load(ctx, name="tiny-sd", **options):
    return run_node(LoadCheckpoint, ctx, name=name, device="cpu", **options)


def txt2img(model, clip, vae, size=64) -> torch.Tensor:
    """A 3-step euler txt2img with CFG: every model of the checkpoint runs."""
    positive = run_node(TextEncode, clip=clip, text="a red circle")
    negative = run_node(TextEncode, clip=clip, text="blurry")
    latent = run_node(EmptyLatent, width=size, height=size, batch_size=1, vae=vae)
    schedule = run_node(Schedule, model=model, sampler="euler", steps=3)
    noised = run_node(AddNoise, latent=latent, schedule=schedule, seed=1)
    sampled, _ = run_node(Sample, model=model, positive=positive, negative=negative, latent=noised, cfg=7.5)
    return run_node(VAEDecode, vae=vae, latent=sampled).pixels


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    from tests.nodes.runctx import make_ctx

    ctx, _ = make_ctx(tmp_path_factory.mktemp("speed"))
    return txt2img(*load(ctx))


# --- attention ---------------------------------------------------------------------------------------------------

def test_sdpa_is_diffusers_default_processor(loader_ctx):
    model, _, _ = load(loader_ctx)
    assert speed.attention_kinds(model.unet) == {"AttnProcessor2_0"}


@pytest.mark.parametrize("attention, processor", [("sliced", "SlicedAttnProcessor"), ("sliced_max", "SlicedAttnProcessor"),
                                                  ("sdpa_math", "PinnedSDPA"), ("sdpa_flash", "PinnedSDPA")])
def test_each_attention_kernel_gives_the_default_picture(loader_ctx, reference, attention, processor):
    model, clip, vae = load(loader_ctx, attention=attention)
    assert speed.attention_kinds(model.unet) == {processor}
    assert (txt2img(model, clip, vae) - reference).abs().max() <= 1e-5


def test_sliced_max_slices_one_head_at_a_time(loader_ctx):
    model, _, _ = load(loader_ctx, attention="sliced_max")
    assert {p.slice_size for p in model.unet.attn_processors.values()} == {1}


def test_a_kernel_the_device_cannot_run_is_refused_with_the_working_choices(loader_ctx):
    with pytest.raises(NodeInputError) as caught:
        load(loader_ctx, attention="sdpa_efficient")  # CUDA only
    assert caught.value.input == "attention" and "EFFICIENT_ATTENTION" in str(caught.value)
    assert "sdpa_math" in caught.value.expected and "sdpa_efficient" not in caught.value.expected


def test_an_unknown_attention_name_is_refused_by_validation(loader_ctx):
    with pytest.raises(Exception, match="sliced_max"):  # pydantic lists the choices
        load(loader_ctx, attention="xformers")


# --- offload -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["model", "sequential"])
def test_offload_on_the_cpu_is_refused(loader_ctx, mode):
    with pytest.raises(NodeInputError) as caught:
        load(loader_ctx, offload=mode)
    assert caught.value.input == "offload" and "GPU" in str(caught.value)


def offloaded(ctx, mode):
    """tiny-sd loaded as the loader does for ``offload=mode``, with the CPU standing in for the GPU."""
    model, clip, vae = load(ctx)
    speed.offload([model.unet, clip.text_encoder, vae.vae], mode, CPU)
    return model, clip, vae


def test_model_offload_moves_each_model_when_it_runs_and_keeps_the_picture(loader_ctx, reference, monkeypatch):
    model, clip, vae = offloaded(loader_ctx, "model")
    turns = []
    real = speed.move_tensors

    def spy(modules, device):
        modules = list(modules)
        turns.append(modules[0])  # the model whose turn it is (its own modules, the model first)
        return real(modules, device)

    monkeypatch.setattr(speed, "move_tensors", spy)
    names = {id(model.unet): "unet", id(clip.text_encoder): "text_encoder", id(vae.vae): "vae"}
    pixels = txt2img(model, clip, vae)
    assert torch.equal(pixels, reference)
    # one turn per model: the encoder serves both prompts, the UNet every step, then the VAE decodes
    assert [names[id(owner)] for owner in turns] == ["text_encoder", "unet", "vae"]
    assert model.device == CPU and vae.device == CPU


def test_sequential_offload_hooks_every_layer_with_weights_and_keeps_the_picture(loader_ctx, reference):
    model, clip, vae = offloaded(loader_ctx, "sequential")
    for module in (model.unet, clip.text_encoder, vae.vae):
        with_weights = [m for m in module.modules() if any(True for _ in m.parameters(recurse=False))]
        assert with_weights and all(len(m._forward_pre_hooks) == 1 and len(m._forward_hooks) == 1 for m in with_weights)
    assert torch.equal(txt2img(model, clip, vae), reference)


def test_sdxl_with_sliced_attention_and_model_offload_keeps_the_picture(loader_ctx):
    """Two text encoders, the pooled embedding and size ids: SDXL's inputs reach the offloaded UNet alike."""
    expected = txt2img(*load(loader_ctx, "tiny-sdxl"), size=128)
    model, clip, vae = load(loader_ctx, "tiny-sdxl", attention="sliced")
    speed.offload([model.unet, clip.text_encoder, clip.text_encoder_2, vae.vae], "model", CPU)
    assert speed.attention_kinds(model.unet) == {"SlicedAttnProcessor"}
    assert (txt2img(model, clip, vae, size=128) - expected).abs().max() <= 1e-5


def test_model_offload_takes_turns_and_puts_back_the_tensors_at_rest():
    first, second = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
    at_rest = first.weight, second.weight
    speed.offload([first, second], "model", META)
    first(torch.zeros(1, 4, device=META))
    assert first.weight.device == META and second.weight is at_rest[1]
    second(torch.zeros(1, 4, device=META))
    assert first.weight is at_rest[0] and second.weight.device == META
    assert speed.execution_device(first) == META


def test_sequential_offload_moves_a_layer_for_its_forward_only():
    layers = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4))
    at_rest = [p for p in layers.parameters()]
    seen = []
    speed.offload([layers], "sequential", META)
    layers[2].register_forward_pre_hook(lambda m, args: seen.append((layers[0].weight.device, m.weight.device)))
    layers(torch.zeros(1, 4, device=META))
    assert seen == [(CPU, META)]  # while the last layer runs, the first is back at rest
    assert all(p is q for p, q in zip(layers.parameters(), at_rest))


def test_a_lora_clone_of_an_offloaded_model_joins_its_group_and_shares_its_tensors_at_rest():
    base, other = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
    bias_at_rest = base.bias
    speed.offload([base, other], "model", META)
    base(torch.zeros(1, 4, device=META))  # base's turn: its weights are the accelerator's copies now
    clone = clone_with_weights(base, {"weight": torch.zeros(4, 4)})
    assert clone.bias is not bias_at_rest and clone.bias.data_ptr() == bias_at_rest.data_ptr()  # shared, not copied
    assert clone.weight.device == CPU and speed.execution_device(clone) == META
    clone(torch.zeros(1, 4, device=META))
    assert clone.weight.device == META and base.weight.device == CPU
    other(torch.zeros(1, 4, device=META))
    assert clone.weight.device == CPU and clone.bias.data_ptr() == bias_at_rest.data_ptr()


# --- torch.compile -------------------------------------------------------------------------------------------------

@pytest.fixture
def eager_compile(monkeypatch):
    """torch.compile with dynamo's eager backend: the graph is captured as inductor's would be, without compiling
    kernels (inductor works on this CPU, but its first call takes about two minutes for tiny-sd's UNet)."""
    monkeypatch.setattr(speed, "COMPILE_BACKEND", "eager")
    yield
    torch._dynamo.reset()


def test_compile_unet_compiles_it_in_place_and_keeps_the_picture(loader_ctx, reference, eager_compile):
    model, clip, vae = load(loader_ctx, compile_unet=True)
    assert model.unet._compiled_call_impl is not None
    assert "unet.conv_in.weight" not in model.unet.state_dict() and "conv_in.weight" in model.unet.state_dict()
    assert (txt2img(model, clip, vae) - reference).abs().max() <= 1e-5


def test_a_clone_of_a_compiled_module_computes_with_its_own_weights(eager_compile):
    layer = torch.nn.Linear(3, 3)
    speed.compile_module(layer)
    clone = clone_with_weights(layer, {"weight": torch.zeros(3, 3)})
    x = torch.ones(1, 3)
    assert clone._compiled_call_impl is not None
    assert torch.equal(clone(x), layer.bias.detach()[None]) and not torch.equal(layer(x), clone(x))


# --- the cache -----------------------------------------------------------------------------------------------------

def test_the_options_reload_the_model_but_reuse_what_was_computed_with_it(tmp_path):
    workflow = lambda attention: {"graphflow": 1, "nodes": {  # noqa: E731
        "ckpt": {"type": "LoadCheckpoint", "inputs": {"name": "tiny-sd", "device": "cpu", "attention": attention}},
        "text": {"type": "TextEncode", "inputs": {"clip": {"from": "ckpt", "output": "clip"}, "text": "a circle"}},
        "empty": {"type": "EmptyLatent", "inputs": {"width": 64, "height": 64, "vae": {"from": "ckpt", "output": "vae"}}},
        "schedule": {"type": "Schedule", "inputs": {"model": {"from": "ckpt", "output": "model"}, "steps": 2}},
        "noise": {"type": "AddNoise", "inputs": {"latent": {"from": "empty", "output": "latent"},
                                                 "schedule": {"from": "schedule", "output": "schedule"}}},
        "sample": {"type": "Sample", "inputs": {"model": {"from": "ckpt", "output": "model"}, "cfg": 1.0,
                                                "positive": {"from": "text", "output": "conditioning"},
                                                "latent": {"from": "noise", "output": "latent"}}},
        "decode": {"type": "VAEDecode", "inputs": {"vae": {"from": "ckpt", "output": "vae"},
                                                   "latent": {"from": "sample", "output": "latent"}}},
        "save": {"type": "SaveImage", "inputs": {"images": {"from": "decode", "output": "image"}}},
    }}
    settings = Settings(models_dir=tmp_path / "models", input_dir=tmp_path, output_dir=tmp_path)
    engine = Engine(settings=settings, cache=ResultCache(value_budget=10**8), check_mutations=True)
    engine.run(workflow("sdpa"))
    report = engine.run(workflow("sliced"))
    assert "ckpt" in report.executed
    assert {"text", "empty", "schedule", "noise", "sample", "decode"} <= set(report.cached)
