"""The synthetic shapes dataset: deterministic, varied, captions that match what is drawn."""
import numpy as np
import pytest

from training.shapes import BACKGROUNDS, COLOURS, SHAPES, SIZE, draw_shape, make_dataset, make_samples


def test_same_seed_same_data_and_other_seed_other_data():
    images_a, captions_a = make_dataset(40, seed=3)
    images_b, captions_b = make_dataset(40, seed=3)
    images_c, _ = make_dataset(40, seed=4)
    assert images_a.shape == (40, SIZE, SIZE, 3) and images_a.dtype == np.uint8
    assert np.array_equal(images_a, images_b) and captions_a == captions_b
    assert not np.array_equal(images_a, images_c)


def test_every_colour_shape_and_background_occurs_and_positions_vary():
    samples = make_samples(400, seed=0)
    assert {s.colour for s in samples} == set(COLOURS)
    assert {s.shape for s in samples} == set(SHAPES)
    assert {s.background for s in samples} == set(BACKGROUNDS)
    assert sum(s.background == "white" for s in samples) > len(samples) / 2  # white is the usual background
    lefts = {s.box[0] for s in samples}
    sides = {s.box[2] - s.box[0] for s in samples}
    assert len(lefts) > 20 and len(sides) > 10


def test_captions_only_name_what_is_drawn_and_include_short_forms():
    samples = make_samples(400, seed=1)
    for s in samples:
        words = set(s.caption.split())
        assert words & set(COLOURS) <= {s.colour}
        assert words & set(SHAPES) <= {s.shape}
        assert words & set(BACKGROUNDS) <= {s.background}
    captions = {s.caption for s in samples}
    assert any(c.endswith("on a white background") and c.count(" ") == 5 for c in captions)
    assert {"a circle", "red", "a red circle"} <= captions


def test_shape_pixels_have_the_named_colour_and_stay_inside_the_box():
    box = (10, 12, 40, 42)
    image = np.asarray(draw_shape("square", "blue", "white", box))
    assert tuple(image[27, 25]) == COLOURS["blue"]
    outside = np.ones(image.shape[:2], bool)
    outside[box[1] : box[3], box[0] : box[2]] = False
    assert (image[outside] == 255).all()


def test_unknown_shape_is_refused():
    with pytest.raises(ValueError, match="hexagon"):
        draw_shape("hexagon", "red", "white", (0, 0, 10, 10))


def test_larger_samples_are_the_native_layout_enlarged():
    """128-pixel samples (the hires-fix size the UNet also trains on) keep shapes' share of the picture."""
    native, large = make_samples(200, seed=5), make_samples(200, seed=5, size=128)
    assert all(s.image.size == (128, 128) for s in large)
    for s, big in zip(native, large):
        assert (big.shape, big.colour, big.caption) == (s.shape, s.colour, s.caption)  # same draws, scaled
        side = big.box[2] - big.box[0]
        assert 44 <= side <= 92 and big.box[3] - big.box[1] == side
        assert min(big.box[:2]) >= 6 and max(big.box[2:]) <= 128 - 6
