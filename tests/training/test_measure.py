"""Pixel measurements: colour and shape are read back from images correctly."""
import numpy as np
import pytest
from PIL import Image

from training.measure import NONE, classify, fill_ratio, foreground_mask, as_array
from training.shapes import draw_shape, make_samples


def test_classifies_generated_dataset_images():
    samples = make_samples(300, seed=11)
    correct = sum(classify(s.image) == (s.colour, s.shape) for s in samples)
    assert correct / len(samples) >= 0.95


@pytest.mark.parametrize("shape, ideal", [("square", 1.0), ("circle", np.pi / 4), ("triangle", 0.5)])
def test_fill_ratio_matches_geometry(shape, ideal):
    image = as_array(draw_shape(shape, "green", "white", (8, 8, 48, 48)))
    assert fill_ratio(foreground_mask(image)) == pytest.approx(ideal, abs=0.04)


def test_accepts_arrays_in_both_ranges_and_larger_images():
    image = draw_shape("triangle", "yellow", "black", (20, 10, 50, 40)).resize((128, 128), Image.BICUBIC)
    assert classify(image) == ("yellow", "triangle")
    assert classify(np.asarray(image)) == ("yellow", "triangle")
    assert classify(np.asarray(image) / 255.0) == ("yellow", "triangle")


def test_stray_specks_do_not_change_the_shape():
    pixels = np.asarray(draw_shape("circle", "red", "white", (20, 20, 50, 50))).copy()
    pixels[2, 60] = pixels[60, 3] = (200, 0, 0)
    assert classify(pixels) == ("red", "circle")


def test_blank_and_grey_images_have_no_colour():
    assert classify(np.full((64, 64, 3), 255, np.uint8)) == (NONE, NONE)
    grey_square = np.asarray(draw_shape("square", "red", "white", (16, 16, 48, 48))).copy()
    grey_square[16:48, 16:48] = 90
    assert classify(grey_square) == (NONE, "square")


def test_rejects_non_rgb_input():
    with pytest.raises(ValueError, match="HxWx3"):
        classify(np.zeros((64, 64)))
