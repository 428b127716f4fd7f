"""SDXL ControlNets in LoadControlNet: the built-in tiny-sdxl-controlnet, single files (original layout and diffusers'
keys), the shipped controlnet-sdxl config, and the checks that an SDXL ControlNet fits the UNet it steers.

Full-size ControlNets are only built on the meta device; everything that runs numbers uses tiny ones."""
import json

import pytest
import torch
from accelerate import init_empty_weights
from safetensors.torch import save_file

from graphflow.context import Settings
from graphflow.errors import NodeInputError
from graphflow.node import spec_of
from nodes import checkpoints as ck
from nodes.builtin_sdxl import TINY_SDXL_VERSION, build_tiny_sdxl_components, build_tiny_sdxl_controlnet, tiny_sdxl_folder
from nodes.checkpoints.controlnet import (controlnet_to_original, controlnet_weights, derive_controlnet_config,
                                          load_controlnet_file)
from nodes.controlnet import ApplyControlNet, LoadControlNet, check_fits
from nodes.values import ControlNet

from .runctx import run_node
from .test_checkpoints import assert_same_weights
from .test_sdxl import values_of


@pytest.fixture(scope="module")
def xl_parts():
    return build_tiny_sdxl_components()


@pytest.fixture(scope="module")
def xl_net(xl_parts):
    return build_tiny_sdxl_controlnet(xl_parts)


def full_size_sdxl():
    from diffusers import ControlNetModel

    config = ck.read_json(ck.CONFIGS / "controlnet-sdxl" / "config.json")
    with init_empty_weights():
        return config, ControlNetModel.from_config(config)


def test_the_shipped_config_is_the_sdxl_unets_encoder_half():
    """controlnet-sdxl is ControlNetModel.from_unet of the shipped SDXL UNet config (diffusers/controlnet-*-sdxl-1.0)."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    config, _ = full_size_sdxl()
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(ck.read_json(ck.CONFIGS / "sdxl" / "unet" / "config.json"))
        copied = ControlNetModel.from_unet(unet, load_weights_from_unet=False)
    made = json.loads(json.dumps(dict(copied.config)))  # tuples as JSON lists
    assert {k: v for k, v in made.items() if not k.startswith("_")} == {k: v for k, v in config.items() if not k.startswith("_")}


def test_sizes_read_from_diffusers_keys_match_the_shipped_config():
    """A full-size SDXL ControlNet's diffusers keys (diffusion_pytorch_model.safetensors) give back its config."""
    config, module = full_size_sdxl()
    weights = controlnet_weights(module.state_dict())
    assert "label_emb.0.0.weight" in weights and "input_hint_block.14.weight" in weights
    derived = derive_controlnet_config(weights)
    assert derived == {k: config[k] for k in derived}
    assert derived["transformer_layers_per_block"] == [1, 2, 10] and derived["addition_embed_type"] == "text_time"
    assert ck.size_defaults("unet", config, derived) == {}


@torch.no_grad()
def residuals(module, parts):
    """The residuals for a random input with tiny-sdxl's added conditioning (pooled text and 6 size ids)."""
    g = torch.Generator().manual_seed(0)
    sample, hint = torch.randn(2, 4, 8, 8, generator=g), torch.rand(2, 3, 64, 64, generator=g)
    context = torch.randn(2, 77, module.config.cross_attention_dim, generator=g)
    added = {"text_embeds": torch.randn(2, parts["text_encoder_2"].config.projection_dim, generator=g),
             "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]] * 2)}
    hint = torch.nn.functional.interpolate(hint, scale_factor=2 ** (len(module.config.conditioning_embedding_out_channels) - 1) / 8)
    down, mid = module(sample, torch.tensor([500]), encoder_hidden_states=context, controlnet_cond=hint,
                       added_cond_kwargs=added, return_dict=False)
    return torch.cat([d.flatten() for d in down] + [mid.flatten()])


def sdxl_file(module, path, layout, with_config=True):
    """``module`` as a single file: "original" (bare keys), "control_model." (prefixed) or "diffusers" keys; with
    graphflow's config in the metadata (the head counts and size-id width the tiny sizes cannot show) or without."""
    state = {k: v.contiguous() for k, v in module.state_dict().items()}
    if layout != "diffusers":
        state = {("control_model." if layout == "control_model." else "") + k: v
                 for k, v in controlnet_to_original(state, dict(module.config)).items()}
    metadata = {"graphflow.controlnet_config": json.dumps(dict(module.config))} if with_config else None
    save_file(state, str(path), metadata=metadata)
    return path


@pytest.mark.parametrize("layout", ["original", "control_model.", "diffusers"])
def test_sdxl_single_files_load_exactly(xl_parts, xl_net, tmp_path, layout):
    loaded, family = load_controlnet_file(sdxl_file(xl_net, tmp_path / "xl.safetensors", layout))
    assert family == "sdxl"
    assert loaded.config.addition_embed_type == "text_time"
    assert_same_weights(loaded, xl_net)
    assert torch.equal(residuals(loaded, xl_parts), residuals(xl_net, xl_parts))


def test_a_size_id_width_the_weights_cannot_show_is_an_error(xl_net, tmp_path):
    """Without a config, an SDXL ControlNet of another size than SDXL's gets the shipped 256-wide size ids, which
    its 80-value added embedding cannot hold: an error at loading, not a shape error while sampling."""
    with pytest.raises(ck.CheckpointError, match="width of its size ids cannot be told"):
        load_controlnet_file(sdxl_file(xl_net, tmp_path / "xl.safetensors", "diffusers", with_config=False))


def test_builtin_tiny_sdxl_controlnet(loader_ctx, xl_parts, xl_net):
    """Built on first use from tiny-sdxl's UNet; its hint encoder shrinks the control image by tiny-sdxl's VAE factor."""
    from diffusers import AutoencoderKL

    control_net = run_node(LoadControlNet, loader_ctx, name="tiny-sdxl-controlnet", device="cpu")
    assert (control_net.family, control_net.name) == ("sdxl", "tiny-sdxl-controlnet")
    vae_factor = 2 ** (len(AutoencoderKL.load_config(tiny_sdxl_folder() / "vae")["block_out_channels"]) - 1)
    assert control_net.downscale == vae_factor
    assert_same_weights(control_net.module, xl_net)  # built deterministically
    unet = xl_parts["unet"].state_dict()  # the encoder half is tiny-sdxl's UNet's (ControlNetModel.from_unet)
    attention = next(k for k in unet if k.startswith("down_blocks.") and k.endswith(".attentions.0.proj_in.weight"))
    for key in ("conv_in.weight", "add_embedding.linear_1.weight", attention):
        assert torch.equal(control_net.module.state_dict()[key], unet[key])
    settings = Settings(models_dir=loader_ctx.settings.models_dir)
    assert spec_of(LoadControlNet).fingerprint({"name": "tiny-sdxl-controlnet"}, settings) == \
        f"builtin:tiny-sdxl-controlnet:v{TINY_SDXL_VERSION}"


def test_an_sdxl_controlnet_fits_only_its_unet(xl_parts, xl_net, sd_model):
    model = values_of(xl_parts)[0]
    net = ControlNet(module=xl_net, family="sdxl", name="xl")
    check_fits(model, net, 4, "positive")  # its own UNet
    with pytest.raises(NodeInputError, match="is for sdxl models, the UNet is sd1"):
        check_fits(sd_model, net, 4, "positive")
    from diffusers import ControlNetModel

    other_ids = ControlNetModel.from_config({**dict(xl_net.config), "addition_time_embed_dim": 4,
                                             "projection_class_embeddings_input_dim": 56})
    with pytest.raises(NodeInputError, match="another size") as caught:
        check_fits(model, ControlNet(module=other_ids, family="sdxl", name="other"), 4, "negative")
    assert caught.value.input == "negative" and "added embedding of 80 values" in str(caught.value.expected)


def test_apply_then_sample_names_a_wrong_controlnet(xl_net, sd_model, sd_clip, sd_vae):
    """An SDXL ControlNet on an SD 1.x model is refused by Sample with the input named."""
    from nodes.latent import EmptyLatent
    from nodes.sampling import AddNoise, Sample, Schedule
    from nodes.text import TextEncode
    from nodes.values import Image

    positive = run_node(TextEncode, clip=sd_clip, text="a")
    positive, negative = run_node(ApplyControlNet, positive=positive, negative=positive,
                                  control_net=ControlNet(module=xl_net, family="sdxl", name="xl"),
                                  image=Image(pixels=torch.rand(1, 64, 64, 3)))
    latent = run_node(EmptyLatent, width=64, height=64, batch_size=1, vae=sd_vae)
    noised = run_node(AddNoise, latent=latent, schedule=run_node(Schedule, model=sd_model, steps=2), seed=0)
    with pytest.raises(NodeInputError, match="is for sdxl models") as caught:
        run_node(Sample, model=sd_model, positive=positive, negative=negative, latent=noised, cfg=5.0)
    assert caught.value.input == "positive"


def test_the_family_is_told_by_the_added_embedding_and_named_in_errors():
    from nodes.checkpoints.controlnet import controlnet_config_folder, controlnet_family

    assert controlnet_family(2048, True) == controlnet_family(96, True) == "sdxl"  # any size: tiny-sdxl's too
    assert (controlnet_family(768, False), controlnet_family(1024, False)) == ("sd1", "sd2")
    assert controlnet_family(1280, True) == "sdxl-refiner"
    with pytest.raises(ck.CheckpointError, match="no ControlNet config for the SDXL refiner family; graphflow loads "
                                                 "ControlNets for SD 1.x, SD 2.x, SDXL base"):
        controlnet_config_folder("sdxl-refiner")


@pytest.mark.parametrize("none_above_the_last", [False, True])
def test_transformer_depths_are_read_from_the_weights(xl_parts, xl_net, tmp_path, none_above_the_last):
    """SDXL's distilled ControlNets ("small", "mid") have fewer transformer blocks than SDXL (none in some levels):
    the depths come from the weights, not from the shipped config ([1, 2, 10]) nor from a config in the file.
    Here: one block everywhere, or every level attending with no block but the last (one)."""
    from diffusers import ControlNetModel

    levels = len(xl_net.config.block_out_channels)
    attending, depth = tuple(xl_net.config.down_block_types), 1
    if none_above_the_last:
        attending, depth = ("CrossAttnDownBlock2D",) * levels, [0] * (levels - 1) + [1]
    torch.manual_seed(0)
    distilled = ControlNetModel.from_config({**dict(xl_net.config), "down_block_types": attending,
                                             "transformer_layers_per_block": depth}).eval()
    assert derive_controlnet_config(controlnet_weights(distilled.state_dict()))["transformer_layers_per_block"] == depth
    config = {k: v for k, v in dict(distilled.config).items() if k != "transformer_layers_per_block"}
    state = {k: v.contiguous() for k, v in distilled.state_dict().items()}
    save_file(state, str(tmp_path / "small.safetensors"), metadata={"graphflow.controlnet_config": json.dumps(config)})
    loaded, family = load_controlnet_file(tmp_path / "small.safetensors")
    assert family == "sdxl" and torch.equal(residuals(loaded, xl_parts), residuals(distilled, xl_parts))
    check_fits(values_of(xl_parts)[0], ControlNet(module=loaded, family="sdxl", name="small"), 4, "positive")
