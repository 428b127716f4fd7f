"""toy-shapes-canny puts the shape on the outline it is given: its model card's measurement
(training/train_controlnet.py's ``measure``), on the first 10 held-out pictures, against the same runs without it."""
from training.train_controlnet import measure
from nodes.controlnet import TOY_CANNY


def test_the_shape_lands_on_its_outline_only_with_the_controlnet():
    assert measure(TOY_CANNY, count=10)["lands"] >= 6  # the card: 15/20
    assert measure(None, count=10)["lands"] <= 2  # the card: 0/20
