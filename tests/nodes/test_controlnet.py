"""ApplyControlNet's chaining rules, and what Sample checks before it uses a ControlNet."""
import pytest
import torch

from graphflow.errors import NodeInputError
from nodes.builtin_models import build_tiny_components, build_tiny_controlnet
from nodes.controlnet import ApplyControlNet
from nodes.latent import EmptyLatent
from nodes.sampling import AddNoise, Sample, Schedule
from nodes.values import ControlNet, Image, Model, nbytes_of

from .runctx import run_node
from .test_parity import encode


@pytest.fixture(scope="module")
def control_net():
    return ControlNet(build_tiny_controlnet(), "sd1", "tiny-sd-controlnet")


def picture(size=64, batch=1, value=0.5):
    return Image(pixels=torch.full((batch, size, size, 3), value))


def conditionings(clip):
    return encode(clip, "a red circle"), encode(clip, "")


def apply(positive, negative, control_net, image=None, **literals):
    return run_node(ApplyControlNet, positive=positive, negative=negative, control_net=control_net,
                    image=image or picture(), **literals)


def test_applies_to_positive_and_negative_and_chains_in_order(sd_clip, control_net):
    positive, negative = conditionings(sd_clip)
    first_pos, first_neg = apply(positive, negative, control_net, strength=0.5, end_percent=0.8)
    second_pos, second_neg = apply(first_pos, first_neg, control_net, picture(value=1.0), start_percent=0.2)
    assert positive.controls == () and negative.controls == ()  # inputs untouched
    assert first_pos.controls == first_neg.controls and len(first_pos.controls) == 1
    [first, second] = second_pos.controls
    assert second_neg.controls == (first, second)
    assert (first.strength, first.start, first.end, second.start, second.end) == (0.5, 0.0, 0.8, 0.2, 1.0)
    assert torch.equal(second.image, picture(value=1.0).pixels)
    assert torch.equal(second_pos.embeds, positive.embeds) and second_pos.text == positive.text


def test_guess_mode_leaves_the_negative_as_it_is(sd_clip, control_net):
    positive, negative = conditionings(sd_clip)
    guided, unguided = apply(positive, negative, control_net, guess_mode=True)
    assert unguided is negative and guided.controls[0].guess_mode


def test_strength_zero_changes_nothing(sd_clip, control_net):
    positive, negative = conditionings(sd_clip)
    assert apply(positive, negative, control_net, strength=0.0) == (positive, negative)


@pytest.mark.parametrize("start, end", [(0.5, 0.5), (0.7, 0.2)])
def test_a_range_that_never_acts_is_refused(sd_clip, control_net, start, end):
    with pytest.raises(NodeInputError) as caught:
        apply(*conditionings(sd_clip), control_net, start_percent=start, end_percent=end)
    assert caught.value.input == "end_percent"


def test_a_conditioning_does_not_count_the_controlnet_weights_again(sd_clip, control_net, sample):
    positive, _ = conditionings(sd_clip)
    guided, _ = apply(positive, positive, control_net)
    assert nbytes_of(guided) == nbytes_of(positive) + picture().pixels.numel() * 4
    assert control_net.nbytes > 0


# ------------------------------------------------------------------------------------ Sample's checks

@pytest.fixture
def sample(sd_vae):
    """Sample(model, positive, negative) on a fresh noised latent of the tiny VAE's size, 2 steps."""
    def run(model, positive, negative, size=64, batch=1, cfg=7.5):
        latent = run_node(EmptyLatent, width=size, height=size, batch_size=batch, vae=sd_vae)
        schedule = run_node(Schedule, model=model, steps=2)
        noised = run_node(AddNoise, latent=latent, schedule=schedule, seed=0)
        return run_node(Sample, model=model, positive=positive, negative=negative, latent=noised, cfg=cfg)[0]
    return run


def test_a_control_image_of_another_size_is_refused_by_name(sd_model, sd_clip, control_net, sample):
    positive, negative = apply(*conditionings(sd_clip), control_net, picture(48))
    with pytest.raises(NodeInputError) as caught:
        sample(sd_model, positive, negative, size=64)
    error = caught.value
    assert error.input == "positive" and (error.expected, error.received) == ("64×64", "48×48")
    assert "ControlImageResize" in str(error)


def test_control_images_must_spread_over_the_batch(sd_model, sd_clip, control_net, sample):
    positive, negative = apply(*conditionings(sd_clip), control_net, picture(batch=2))
    with pytest.raises(NodeInputError, match="2 control images cannot be spread over a latent batch of 3"):
        sample(sd_model, positive, negative, batch=3)
    assert sample(sd_model, positive, negative, batch=2).samples.shape[0] == 2  # one image per latent


def test_a_controlnet_for_another_unet_is_refused(sd_clip, control_net, sample):
    parts = build_tiny_components(cross_attention_dim=32)
    parts["unet"].register_to_config(layers_per_block=1)  # the config is what the check reads
    other = Model(parts["unet"], dict(parts["scheduler"].config), "sd1", "epsilon", "other")
    positive, negative = apply(*conditionings(sd_clip), control_net)
    with pytest.raises(NodeInputError, match="made for a UNet of another size"):
        sample(other, positive, negative)
    sd2 = Model(parts["unet"], dict(parts["scheduler"].config), "sd2", "epsilon", "sd2-model")
    with pytest.raises(NodeInputError, match="is for sd1 models, the UNet is sd2"):
        sample(sd2, positive, negative)


def test_without_guidance_only_the_positive_controls_count(sd_model, sd_clip, control_net, sample):
    positive, negative = conditionings(sd_clip)
    _, controlled_negative = apply(positive, negative, control_net, picture(48))  # would be refused if used
    plain = sample(sd_model, positive, None, cfg=1.0).samples
    assert torch.equal(sample(sd_model, positive, controlled_negative, cfg=1.0).samples, plain)


def test_a_controlnet_on_the_positive_only_acts_on_the_positive_half(sd_model, sd_clip, control_net, sample):
    """Wired to the positive alone (not guess mode), the negative half gets zero residuals."""
    positive, negative = conditionings(sd_clip)
    controlled_positive, controlled_negative = apply(positive, negative, control_net)
    plain = sample(sd_model, positive, negative).samples
    positive_only = sample(sd_model, controlled_positive, negative).samples
    on_both = sample(sd_model, controlled_positive, controlled_negative).samples
    assert not torch.allclose(positive_only, plain) and not torch.allclose(positive_only, on_both)


def test_inpainting_unets_take_controlnets_on_the_latent_channels(sd_clip, control_net):
    from nodes.values import Latent

    parts = build_tiny_components(in_channels=9)
    model = Model(parts["unet"], dict(parts["scheduler"].config), "sd1", "epsilon", "inpaint")
    samples = torch.zeros(1, 4, 32, 32)
    latent = Latent(samples=samples, noise_mask=torch.ones(1, 1, 32, 32), masked_image=torch.zeros(1, 4, 32, 32))
    schedule = run_node(Schedule, model=model, steps=2)
    noised = run_node(AddNoise, latent=latent, schedule=schedule, seed=0)
    positive, negative = apply(*conditionings(sd_clip), control_net)
    controlled = run_node(Sample, model=model, positive=positive, negative=negative, latent=noised)[0].samples
    plain = run_node(Sample, model=model, positive=conditionings(sd_clip)[0], negative=negative, latent=noised)[0].samples
    assert controlled.shape == (1, 4, 32, 32) and not torch.allclose(controlled, plain)


def test_a_pooling_controlnet_always_acts_in_guess_mode(sd_clip):
    """diffusers: guess_mode = guess_mode or global_pool_conditions (the shuffle ControlNet)."""
    module = build_tiny_controlnet()
    module.register_to_config(global_pool_conditions=True)
    positive, negative = conditionings(sd_clip)
    guided, unguided = apply(positive, negative, ControlNet(module, "sd1", "shuffle"))
    assert unguided is negative and guided.controls[0].guess_mode
