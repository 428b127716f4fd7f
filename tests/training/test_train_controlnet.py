"""training/train_controlnet.py: control images are the Canny node's edges, and a short run saves a ControlNet
folder for toy-shapes that LoadControlNet reads back exactly."""
import dataclasses

import numpy as np
import torch

from nodes.checkpoints.controlnet import load_controlnet_folder
from training.shapes import make_samples
from training.train_controlnet import Config, edge_images, save, train
from training.train_toy import Log

TINY = dataclasses.replace(Config(), dataset_size=8, steps=2, batch=4, log_every=1)


def test_control_images_are_each_pictures_outline():
    [sample] = make_samples(1, seed=5)
    edges = edge_images(np.asarray(sample.image, dtype=np.uint8)[None])
    assert edges.shape == (1, 3, 64, 64) and set(edges.unique().tolist()) == {0.0, 1.0}
    left, top, right, bottom = sample.box
    ys, xs = np.nonzero(edges[0, 0].numpy())
    assert xs.min() >= left - 2 and xs.max() <= right + 1 and ys.min() >= top - 2 and ys.max() <= bottom + 1


def test_a_short_run_saves_a_controlnet_for_toy_shapes(tmp_path):
    controlnet = train(TINY, Log())
    save(tmp_path / "cn", controlnet, TINY, Log())
    loaded, family = load_controlnet_folder(tmp_path / "cn")
    assert family == "sd1" and list(loaded.config.conditioning_embedding_out_channels) == [16, 32, 64]
    assert list(loaded.config.block_out_channels) == [32, 64, 64]
    for key, value in controlnet.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert (tmp_path / "cn" / "training.json").is_file()
