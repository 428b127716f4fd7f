"""Canny and ControlImageResize: control images made from pictures."""
import pytest
import torch

from graphflow.errors import NodeInputError
from nodes.builtin_models import build_tiny_controlnet
from nodes.preprocessors import Canny, ControlImageResize, canny_edges
from nodes.values import ControlNet, Image, Latent

from .runctx import run_node


def square(size=32, low=8, high=24, value=1.0):
    pixels = torch.zeros(1, size, size, 3)
    pixels[:, low:high, low:high] = value
    return Image(pixels=pixels)


def test_a_square_gives_its_thin_outline_and_nothing_else():
    edges = run_node(Canny, image=square()).pixels
    assert edges.shape == (1, 32, 32, 3) and torch.equal(edges[..., 0], edges[..., 2])
    mask = edges[0, ..., 0] > 0.5
    assert set(edges.unique().tolist()) == {0.0, 1.0}
    assert not mask[10:22, 10:22].any() and not mask[:5].any() and not mask[:, 27:].any()  # inside and far outside: none
    for row in range(10, 22):  # each side of the square is found, one pixel thick
        assert mask[row, 5:12].sum() == 1 and mask[row, 20:27].sum() == 1
        assert mask[5:12, row].sum() == 1 and mask[20:27, row].sum() == 1


def sobel_magnitude(image):
    from scipy import ndimage

    grey = (image.pixels[0, ..., 0] * 255).numpy()
    return abs(ndimage.sobel(grey, axis=1, mode="nearest")) + abs(ndimage.sobel(grey, axis=0, mode="nearest"))


def test_thresholds_decide_which_edges_count():
    faint = square(value=0.2)  # a step of 51 grey levels: |dx| + |dy| = 4 × 51 = 204 across a side, more at corners
    strongest = float(sobel_magnitude(faint).max())
    assert run_node(Canny, image=faint, low_threshold=100, high_threshold=200).pixels.sum() > 0
    assert run_node(Canny, image=faint, low_threshold=100, high_threshold=int(strongest)).pixels.sum() == 0
    with pytest.raises(NodeInputError) as caught:
        run_node(Canny, image=faint, low_threshold=201, high_threshold=200)
    assert caught.value.input == "low_threshold"


def test_hysteresis_keeps_weak_edges_only_where_they_touch_strong_ones():
    grey = torch.zeros(40, 40)
    grey[:, 20:] = torch.linspace(255, 40, 40)[:, None]  # one vertical edge, strong at the top, weak at the bottom
    grey[30:, :6] = 40  # a separate weak edge, alone
    edges = canny_edges(grey.numpy(), low=100, high=600)
    column = edges[:, 18:22].any(axis=1)
    assert column.all()  # the whole first edge: its weak lower part is joined to the strong top
    assert not edges[30:, 4:8].any()  # the lone weak edge is dropped...
    assert canny_edges(grey.numpy(), low=100, high=150)[30:, 4:8].any()  # ...and is an edge once it counts as strong


@pytest.fixture(scope="module")
def control_net():
    return ControlNet(build_tiny_controlnet(), "sd1", "tiny")  # factor 2


def latent(h, w):
    return Latent(samples=torch.zeros(1, 4, h, w))


def test_resize_matches_the_latent_pixel_size(control_net):
    picture = Image(pixels=torch.rand(2, 30, 60, 3, generator=torch.Generator().manual_seed(0)))
    for mode in ("crop", "stretch", "pad"):
        resized = run_node(ControlImageResize, image=picture, latent=latent(16, 24), control_net=control_net, resize_mode=mode)
        assert resized.pixels.shape == (2, 32, 48, 3), mode
    same = Image(pixels=torch.rand(1, 32, 48, 3))
    assert run_node(ControlImageResize, image=same, latent=latent(16, 24), control_net=control_net) is same


def test_crop_cuts_the_overflow_and_pad_keeps_everything(control_net):
    wide = torch.zeros(1, 16, 64, 3)
    wide[:, :, :16] = 1.0  # a white left quarter
    picture = Image(pixels=wide)
    cropped = run_node(ControlImageResize, image=picture, latent=latent(16, 16), control_net=control_net,
                       resize_mode="crop", method="nearest").pixels
    assert cropped.max() == 0  # scaled ×2 to 32×128, the centre 32 columns hold none of the white quarter
    padded = run_node(ControlImageResize, image=picture, latent=latent(16, 16), control_net=control_net,
                      resize_mode="pad", method="nearest").pixels
    assert padded[0, :12].max() == 0 and padded[0, 20:].max() == 0  # 32×8 picture centred, black above and below
    assert torch.equal(padded[0, 12:20, :8, 0], torch.ones(8, 8)) and padded[0, 12:20, 8:].max() == 0
