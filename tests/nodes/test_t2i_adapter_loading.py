"""LoadT2IAdapter and nodes.checkpoints.t2i_adapter: TencentARC's original layout and diffusers' keys ↔ diffusers'
T2IAdapter, strict offline loading, the built-in tiny adapters, and Sample's checks of an adapter against the UNet.

Full-size adapters are only built on the meta device; everything that runs numbers uses tiny ones."""
import pytest
import torch
from accelerate import init_empty_weights
from safetensors.torch import save_file

from graphflow.errors import NodeInputError
from nodes import checkpoints as ck
from nodes.checkpoints.t2i_adapter import (ADAPTER_CONFIGS, adapter_to_original, adapter_weights,
                                           derive_adapter_config, load_adapter_file)
from nodes.t2i_adapter import (ApplyT2IAdapter, LoadT2IAdapter, build_tiny_adapter, control_image_factor,
                               tiny_adapter_folder)
from nodes.values import Image, T2IAdapter

from .runctx import run_node
from .test_checkpoints import assert_same_weights
from .test_parity import run_nodes

# ------------------------------------------------------------------- real layouts, on the meta device

# Tensors of the released files with their shapes (t2iadapter_canny_sd14v1.pth takes a grey image: 1 × 8² inputs;
# t2iadapter_color_sd14v1.pth is the light adapter), and the diffusers names diffusers' conversion script gives them.
REAL_KEYS = {
    "full_adapter": {"conv_in.weight": ((320, 64, 3, 3), "adapter.conv_in.weight"),
                     "body.0.block1.weight": ((320, 320, 3, 3), "adapter.body.0.resnets.0.block1.weight"),
                     "body.1.block2.weight": ((320, 320, 1, 1), "adapter.body.0.resnets.1.block2.weight"),
                     "body.2.in_conv.weight": ((640, 320, 1, 1), "adapter.body.1.in_conv.weight"),
                     "body.4.in_conv.bias": ((1280,), "adapter.body.2.in_conv.bias"),
                     "body.7.block2.bias": ((1280,), "adapter.body.3.resnets.1.block2.bias")},
    "full_adapter_xl": {"conv_in.weight": ((320, 768, 3, 3), "adapter.conv_in.weight"),
                        "body.2.in_conv.weight": ((640, 320, 1, 1), "adapter.body.1.in_conv.weight"),
                        "body.6.block1.weight": ((1280, 1280, 3, 3), "adapter.body.3.resnets.0.block1.weight")},
    "light_adapter": {"body.0.in_conv.weight": ((80, 192, 1, 1), "adapter.body.0.in_conv.weight"),
                      "body.0.body.3.block2.weight": ((80, 80, 3, 3), "adapter.body.0.resnets.3.block2.weight"),
                      "body.3.out_conv.weight": ((1280, 320, 1, 1), "adapter.body.3.out_conv.weight")},
}
CHANNELS = {"full_adapter": 1, "full_adapter_xl": 3, "light_adapter": 3}


@pytest.fixture(scope="module", params=list(ADAPTER_CONFIGS))
def full_size(request):
    """A full-size adapter from a shipped config (image channels of the REAL_KEYS file), built without memory."""
    from diffusers import T2IAdapter as DiffusersAdapter

    config = {**ck.read_json(ck.CONFIGS / ADAPTER_CONFIGS[request.param] / "config.json"), "in_channels": CHANNELS[request.param]}
    with init_empty_weights():
        module = DiffusersAdapter.from_config(config)
    return request.param, dict(module.config), module


def test_written_layout_has_the_published_names_and_shapes(full_size):
    kind, config, module = full_size
    original = adapter_to_original(module.state_dict(), config)
    assert len(original) == len(module.state_dict())
    assert len(original) == {"full_adapter": 38, "full_adapter_xl": 38, "light_adapter": 80}[kind]
    renamed = adapter_weights(original)
    for key, (expected, diffusers_name) in REAL_KEYS[kind].items():
        assert tuple(original[key].shape) == expected, key
        assert tuple(renamed[diffusers_name].shape) == expected, key


def test_sizes_read_from_either_layout_match_the_shipped_configs(full_size):
    _, config, module = full_size
    for weights in (module.state_dict(), adapter_weights(adapter_to_original(module.state_dict(), config))):
        derived = derive_adapter_config(weights)
        assert derived == {k: config[k] for k in derived}


# --------------------------------------------------------------------------------- tiny single files

@pytest.fixture(scope="module")
def tiny():
    """A small SD 1.x-layout adapter (unshuffle 8, three levels): what the released files hold, at test size."""
    from diffusers import T2IAdapter as DiffusersAdapter

    torch.manual_seed(0)
    return DiffusersAdapter(in_channels=3, channels=[16, 32, 32], num_res_blocks=2, downscale_factor=8).eval()


CONFIG_KEYS = ("adapter_type", "in_channels", "channels", "num_res_blocks", "downscale_factor")


def original_tensors(module):
    return {k: v.contiguous() for k, v in adapter_to_original(module.state_dict(), dict(module.config)).items()}


@torch.no_grad()
def features(module):
    pixels = torch.rand(1, module.config.in_channels, 64, 64, generator=torch.Generator().manual_seed(0))
    return torch.cat([f.flatten() for f in module(pixels)])


@pytest.mark.parametrize("layout", ["original", "diffusers"])
def test_single_file_round_trip_is_exact(tiny, tmp_path, layout):
    tensors = original_tensors(tiny) if layout == "original" else {k: v.contiguous() for k, v in tiny.state_dict().items()}
    save_file(tensors, str(tmp_path / "adapter.safetensors"))
    loaded = load_adapter_file(tmp_path / "adapter.safetensors")
    assert {k: loaded.config[k] for k in CONFIG_KEYS} == {k: tiny.config[k] for k in CONFIG_KEYS}
    assert_same_weights(loaded, tiny)
    assert torch.equal(features(loaded), features(tiny))


def test_pth_files_and_light_adapters_load(tmp_path):
    from diffusers import T2IAdapter as DiffusersAdapter

    torch.manual_seed(1)
    light = DiffusersAdapter(in_channels=3, channels=[16, 32], num_res_blocks=2, downscale_factor=8,
                             adapter_type="light_adapter").eval()
    torch.save(original_tensors(light), tmp_path / "t2iadapter_color_tiny.pth")
    loaded = load_adapter_file(tmp_path / "t2iadapter_color_tiny.pth")
    assert loaded.config.adapter_type == "light_adapter"
    assert_same_weights(loaded, light)


@pytest.mark.parametrize("change, message", [
    (lambda t: t.pop("body.3.block2.weight"), "missing adapter.body.1.resnets.1.block2.weight"),
    (lambda t: t.update({"body.2.down_opt.op.weight": torch.zeros(32, 16, 3, 3)}), "unexpected adapter.body.1.resnets.0.down_opt.op.weight"),
    (lambda t: t.update({"body.0.block2.weight": torch.zeros(16, 16, 3, 3)}), "adapter.body.0.resnets.0.block2.weight"),
    (lambda t: t.pop("conv_in.weight"), "adapter.body.0.in_conv.weight is missing"),
])
def test_a_wrong_file_is_an_error_never_random_weights(tiny, tmp_path, change, message):
    tensors = original_tensors(tiny)
    change(tensors)
    save_file(tensors, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ck.CheckpointError, match="T2I-Adapter") as caught:
        load_adapter_file(tmp_path / "bad.safetensors")
    assert message in str(caught.value)


@pytest.mark.parametrize("tensors, message", [
    ({"input_hint_block.0.weight": torch.zeros(1)}, "LoadControlNet"),
    ({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}, "LoadCheckpoint"),
    ({"something.else": torch.zeros(1)}, "not a T2I-Adapter"),
    ({"conv_in.weight": torch.zeros(16, 50, 3, 3), "body.0.block1.weight": torch.zeros(16, 16, 3, 3),
      "body.1.block1.weight": torch.zeros(16, 16, 3, 3)}, "50 input channels"),
])
def test_files_that_are_not_adapters(tmp_path, tensors, message):
    save_file(tensors, str(tmp_path / "other.safetensors"))
    with pytest.raises(ck.CheckpointError, match=message):
        load_adapter_file(tmp_path / "other.safetensors")


# ------------------------------------------------------------------------------------ the node

def test_builtin_tiny_adapters_are_built_for_their_models(loader_ctx, tiny_parts):
    from nodes.builtin_models import TINY_SEED
    from nodes.builtin_sdxl import TINY_SDXL_VERSION

    adapter = run_node(LoadT2IAdapter, loader_ctx, name="tiny-sd-t2i-adapter", device="cpu")
    assert adapter.name == "tiny-sd-t2i-adapter"
    assert_same_weights(adapter.module, build_tiny_adapter(tiny_parts["unet"].config, tiny_parts["vae"].config,
                                                           seed=TINY_SEED + 7))
    assert tiny_adapter_folder(sdxl=True).name == f"tiny-sdxl-t2i-adapter-v{TINY_SDXL_VERSION}"
    xl = run_node(LoadT2IAdapter, loader_ctx, name="tiny-sdxl-t2i-adapter", device="cpu")
    assert xl.module.config.downscale_factor == 16  # tiny-sdxl's VAE (8×) and first block without attention (×2)


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_the_layout_for_a_full_size_unet_is_the_released_adapters(family):
    from nodes.t2i_adapter import adapter_config_for

    unet, vae = (ck.read_json(ck.CONFIGS / family / part / "config.json") for part in ("unet", "vae"))
    released = ck.read_json(ck.CONFIGS / ADAPTER_CONFIGS["full_adapter" if family == "sd1" else "full_adapter_xl"] / "config.json")
    assert adapter_config_for(unet, vae) == {k: released[k] for k in CONFIG_KEYS}


@pytest.mark.parametrize("folder", ["t2i_adapter", "controlnet"])
def test_files_and_folders_in_the_adapter_folders(loader_ctx, models_dir, tiny, folder):
    where = models_dir / folder
    where.mkdir()
    save_file(original_tensors(tiny), str(where / "t2iadapter_tiny_sd14v1.safetensors"))
    tiny.save_pretrained(where / "t2i-adapter-tiny-diffusers")
    for name in ("t2iadapter_tiny_sd14v1", "t2i-adapter-tiny-diffusers"):
        adapter = run_node(LoadT2IAdapter, loader_ctx, name=name, device="cpu", dtype="float16")
        assert adapter.name == name and next(adapter.module.parameters()).dtype == torch.float16
        assert torch.equal(adapter.module.state_dict()["adapter.body.1.in_conv.weight"],
                           tiny.state_dict()["adapter.body.1.in_conv.weight"].half())


def test_errors_name_the_input_and_list_what_is_there(loader_ctx, models_dir, tiny):
    (models_dir / "t2i_adapter").mkdir()
    save_file(original_tensors(tiny), str(models_dir / "t2i_adapter" / "sketch.safetensors"))
    with pytest.raises(NodeInputError) as caught:
        run_node(LoadT2IAdapter, loader_ctx, name="depth")
    assert caught.value.input == "name" and {"tiny-sd-t2i-adapter", "sketch.safetensors"} <= set(caught.value.expected)
    (models_dir / "t2i_adapter" / "broken.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(NodeInputError) as caught:
        run_node(LoadT2IAdapter, loader_ctx, name="broken")
    assert caught.value.input == "name" and "cannot be loaded" in str(caught.value)


# ------------------------------------------------------------------------- Sample's checks

def applied(adapter, image):
    def condition(positive, negative):
        return run_node(ApplyT2IAdapter, positive=positive, negative=negative, t2i_adapter=adapter, image=image)
    return condition


@pytest.fixture(scope="module")
def sd_adapter(tiny_parts):
    return T2IAdapter(build_tiny_adapter(tiny_parts["unet"].config, tiny_parts["vae"].config, seed=1), "tiny")


def test_a_control_image_of_another_size_names_the_size(sd_model, sd_clip, sd_vae, sd_adapter):
    with pytest.raises(NodeInputError, match="takes a 64×64 control image") as caught:
        run_nodes(sd_model, sd_clip, sd_vae, "euler", seed=1, condition=applied(sd_adapter, Image(torch.rand(1, 48, 64, 3))))
    assert caught.value.input == "positive"


@pytest.mark.parametrize("size", [64, 128])
def test_an_adapter_for_another_unet_is_refused_whatever_the_image(sd_model, sd_clip, sd_vae, size):
    """SD 1.x's layout (second feature halved) on the tiny UNet (SDXL's: first two at one size): same channels."""
    from diffusers import T2IAdapter as DiffusersAdapter

    sd1_layout = T2IAdapter(DiffusersAdapter(in_channels=3, channels=[32, 64], downscale_factor=4).eval(), "sd1-layout")
    with pytest.raises(NodeInputError, match="UNet of another layout") as caught:
        run_nodes(sd_model, sd_clip, sd_vae, "euler", seed=1, condition=applied(sd1_layout, Image(torch.rand(1, size, size, 3))))
    assert caught.value.expected.startswith("features ['32@1/1', '64@1/1']") and caught.value.received == "features ['32@1/1', '64@1/2']"


def test_control_images_must_spread_over_the_batch(sd_model, sd_clip, sd_vae, sd_adapter):
    with pytest.raises(NodeInputError, match="2 control images cannot be spread over a latent batch of 3"):
        run_nodes(sd_model, sd_clip, sd_vae, "euler", seed=1, batch_size=3,
                  condition=applied(sd_adapter, Image(torch.rand(2, 64, 64, 3))))


def test_strength_zero_leaves_the_conditionings_as_they_are(sd_clip, sd_adapter):
    from .test_parity import encode

    positive, negative = encode(sd_clip, "a"), encode(sd_clip, "b")
    out = run_node(ApplyT2IAdapter, positive=positive, negative=negative, t2i_adapter=sd_adapter,
                   image=Image(torch.rand(1, 64, 64, 3)), strength=0.0)
    assert out[0] is positive and out[1] is negative


def test_comfy_ksampler_refuses_adapters_instead_of_dropping_them(sd_model, sd_clip, sd_vae, sd_adapter):
    from nodes.comfy.ksampler import KSampler
    from nodes.latent import EmptyLatent

    from .test_parity import encode

    positive, negative = run_node(ApplyT2IAdapter, positive=encode(sd_clip, "a"), negative=encode(sd_clip, "b"),
                                  t2i_adapter=sd_adapter, image=Image(torch.rand(1, 64, 64, 3)))
    latent = run_node(EmptyLatent, width=64, height=64, batch_size=1, vae=sd_vae)
    with pytest.raises(NodeInputError, match="does not apply T2I-Adapters") as caught:
        run_node(KSampler, model=sd_model, seed=1, steps=2, cfg=7.0, positive=positive, negative=negative,
                 latent_image=latent)
    assert caught.value.input == "positive"


def test_control_image_resize_takes_the_adapters_factor(tiny_parts, sd_adapter):
    from nodes.builtin_sdxl import build_tiny_sdxl_components
    from nodes.preprocessors import ControlImageResize
    from nodes.values import Latent

    xl_parts = build_tiny_sdxl_components()
    xl = T2IAdapter(build_tiny_adapter(xl_parts["unet"].config, xl_parts["vae"].config, seed=1), "xl")
    for adapter, vae in ((sd_adapter, tiny_parts["vae"]), (xl, xl_parts["vae"])):
        assert control_image_factor(adapter) == 2 ** (len(vae.config.block_out_channels) - 1)  # the VAE's factor
    picture = Image(pixels=torch.rand(1, 30, 60, 3))
    resized = run_node(ControlImageResize, image=picture, latent=Latent(samples=torch.zeros(1, 4, 16, 24)), t2i_adapter=sd_adapter)
    assert resized.pixels.shape == (1, 16 * 2, 24 * 2, 3)
    with pytest.raises(NodeInputError, match="connect a ControlNet or a T2I-Adapter"):
        run_node(ControlImageResize, image=picture, latent=Latent(samples=torch.zeros(1, 4, 16, 24)))


def test_fingerprint_and_pool(models_dir, tiny):
    from graphflow.context import Settings
    from graphflow.node import spec_of
    from nodes.builtin_models import TINY_VERSION
    from nodes.builtin_sdxl import TINY_SDXL_VERSION

    spec = spec_of(LoadT2IAdapter)
    assert spec.pool == "model" and spec.outputs == {"t2i_adapter": "T2I_ADAPTER"}
    settings = Settings(models_dir=models_dir)
    assert spec.fingerprint({"name": "tiny-sd-t2i-adapter"}, settings) == f"builtin:tiny-sd-t2i-adapter:v{TINY_VERSION}"
    assert spec.fingerprint({"name": "tiny-sdxl-t2i-adapter"}, settings) == f"builtin:tiny-sdxl-t2i-adapter:v{TINY_SDXL_VERSION}"
    (models_dir / "t2i_adapter").mkdir()
    path = models_dir / "t2i_adapter" / "sketch.safetensors"
    save_file(original_tensors(tiny), str(path))
    first = spec.fingerprint({"name": "sketch"}, settings)
    save_file({k: v.contiguous() for k, v in tiny.state_dict().items()}, str(path))
    assert spec.fingerprint({"name": "sketch"}, settings) != first
    assert spec.preflight({"name": "nope"}, settings)
    assert not spec.preflight({"name": "tiny-sdxl-t2i-adapter"}, settings)


def test_a_conditioning_does_not_count_the_adapter_weights_again(sd_clip, sd_adapter):
    from nodes.values import nbytes_of

    from .test_parity import encode

    positive = encode(sd_clip, "a")
    adapted, _ = run_node(ApplyT2IAdapter, positive=positive, negative=positive, t2i_adapter=sd_adapter,
                          image=Image(torch.rand(1, 64, 64, 3)))
    assert nbytes_of(adapted) == nbytes_of(positive) + 64 * 64 * 3 * 4
    assert sd_adapter.nbytes > 0
