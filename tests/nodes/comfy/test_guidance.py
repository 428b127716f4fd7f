"""ComfyUI's area composition and guidance: the weights of an area, the mean over overlapping entries, the
negative's same-area copies, and which entries share a UNet batch."""
import pytest
import torch

from nodes.comfy.guidance import ComfyDenoiser, Entry, area_weights, composed_conditionings
from nodes.values import Conditioning, Model


class ContextEcho:
    """A stand-in UNet predicting, for each batch row, the constant eps = that row's first context value."""

    def __init__(self):
        self.config = type("Config", (), {"in_channels": 4, "cross_attention_dim": 4})()
        self.batches = []
        self._weight = torch.nn.Parameter(torch.zeros(1))

    def parameters(self):
        return iter([self._weight])

    def __call__(self, sample, timestep, encoder_hidden_states, return_dict=False):
        self.batches.append((tuple(sample.shape), tuple(encoder_hidden_states.shape)))
        return (encoder_hidden_states[:, 0, 0].reshape(-1, 1, 1, 1) * torch.ones_like(sample),)


CONFIG = {"beta_schedule": "scaled_linear"}


def cond(value, length=77, area=None, strength=1.0, also=()):
    return Conditioning(embeds=torch.full((1, length, 4), float(value)), area=area, strength=strength, also=also)


def test_area_weights_ramp_over_eight_latent_pixels_on_inner_edges_only():
    weights = area_weights((32, 32, 16, 16), 64, 64, 0.5, (1, 4, 32, 32))
    ramp = torch.tensor([(t + 1) / 8 for t in range(8)])
    assert torch.allclose(weights[0, 0, :8, 16], 0.5 * ramp)          # top edge rises 1/8 .. 8/8
    assert torch.allclose(weights[0, 0, 24:, 16], 0.5 * ramp.flip(0))  # bottom edge falls
    assert float(weights[0, 0, 0, 0]) == pytest.approx(0.5 / 64)      # a corner: both ramps
    assert torch.all(weights[0, 0, 8:24, 8:24] == 0.5)
    at_border = area_weights((32, 32, 0, 0), 64, 64, 1.0, (1, 4, 32, 32))
    assert torch.all(at_border[0, 0, :24, :24] == 1.0) and float(at_border[0, 0, 31, 0]) == pytest.approx(1 / 8)
    small = area_weights((8, 8, 4, 4), 64, 64, 1.0, (1, 4, 8, 8))    # rr = 8 // 4 = 2 for an 8-pixel area
    assert small[0, 0, :, 4].tolist() == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5]


def test_overlapping_entries_average_by_weight():
    model = Model(ContextEcho(), CONFIG, "sd1", "epsilon", "echo")
    positive = cond(1.0, also=(cond(3.0, area=(4, 4, 0, 0), strength=2.0),))
    denoiser = ComfyDenoiser(model, positive, cond(0.0), 1.0)
    x, sigma = torch.zeros(1, 4, 8, 8), torch.tensor([2.0])
    out = denoiser(x, sigma)
    # denoised = x - sigma·eps: -2 from the full prompt, -6 from the area one (weight 2, rr = 1: no ramp)
    assert torch.allclose(out[..., :4, :4], torch.full((1, 4, 4, 4), (-2.0 * 1 + -6.0 * 2) / 3))
    assert torch.allclose(out[..., 4:, :], torch.full((1, 4, 4, 8), -2.0))


def test_guidance_mixes_negative_and_positive_predictions():
    model = Model(ContextEcho(), CONFIG, "sd1", "epsilon", "echo")
    out = ComfyDenoiser(model, cond(1.0), cond(0.5), 4.0)(torch.zeros(1, 4, 8, 8), torch.tensor([1.0]))
    assert torch.allclose(out, torch.full((1, 4, 8, 8), -0.5 + (-1.0 + 0.5) * 4.0))
    assert model.unet.batches == [((2, 4, 8, 8), (2, 77, 4))]


def test_the_negative_gets_a_copy_for_each_positive_area():
    positive = cond(1.0, also=(cond(2.0, area=(4, 4, 0, 4)),))
    pos, neg = composed_conditionings(positive, cond(9.0))
    assert [e.area for e in pos] == [None, (4, 4, 0, 4)]
    assert [e.area for e in neg] == [None, (4, 4, 0, 4)]
    assert float(neg[1].embeds[0, 0, 0]) == 9.0 and neg[1].strength == 1.0
    # a negative area already there is not copied twice, and the smallest covering entry is the one copied
    pos, neg = composed_conditionings(positive, cond(9.0, also=(cond(8.0, area=(8, 8, 0, 0)),)))
    assert [(e.area, float(e.embeds[0, 0, 0])) for e in neg][-1] == ((4, 4, 0, 4), 8.0)
    assert Entry in {type(e) for e in pos}


def test_prompts_of_different_lengths_share_a_batch_up_to_four_times_longer():
    model = Model(ContextEcho(), CONFIG, "sd1", "epsilon", "echo")
    ComfyDenoiser(model, cond(1.0, length=154), cond(0.0), 2.0)(torch.zeros(1, 4, 8, 8), torch.tensor([1.0]))
    assert model.unet.batches == [((2, 4, 8, 8), (2, 154, 4))]
    model = Model(ContextEcho(), CONFIG, "sd1", "epsilon", "echo")
    ComfyDenoiser(model, cond(1.0, length=385), cond(0.0), 2.0)(torch.zeros(1, 4, 8, 8), torch.tensor([1.0]))
    assert sorted(model.unet.batches) == [((1, 4, 8, 8), (1, 77, 4)), ((1, 4, 8, 8), (1, 385, 4))]


def test_an_area_outside_the_latent_is_named():
    from graphflow.errors import NodeInputError

    model = Model(ContextEcho(), CONFIG, "sd1", "epsilon", "echo")
    denoiser = ComfyDenoiser(model, cond(1.0, area=(8, 8, 0, 16)), cond(0.0), 2.0)
    with pytest.raises(NodeInputError) as error:
        denoiser(torch.zeros(1, 4, 8, 8), torch.tensor([1.0]))
    assert error.value.input == "positive"
