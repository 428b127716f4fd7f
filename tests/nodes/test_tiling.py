"""Tiles: a grid of full-size overlapping tiles, blend weights that sum to one, and one runner for networks that
grow the picture (upscalers, the VAE decoder) and that shrink it (the VAE encoder)."""
import torch
import torch.nn.functional as F

from nodes.tiling import axis_weights, run_tiled, tile_count, tile_starts


def test_tile_starts_cover_the_axis_with_full_tiles():
    assert tile_starts(40, 64, 16) == [0]
    assert tile_starts(100, 48, 16) == [0, 32, 52]
    for length, tile, overlap in ((100, 48, 16), (97, 32, 8), (64, 32, 0)):
        starts = tile_starts(length, tile, overlap)
        assert starts[-1] + tile == length
        assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))


def test_axis_weights_sum_to_one_and_skip_the_margin():
    starts, size, margin, scale = tile_starts(100, 48, 16), 48, 4, 2
    total = torch.zeros(100 * scale)
    for i, start in enumerate(starts):
        w = axis_weights(starts, i, size, margin, scale)
        total[start * scale:(start + size) * scale] += w
        if i > 0:
            assert torch.all(w[:margin * scale] == 0)  # edge pixels that saw padding do not count
        if i < len(starts) - 1:
            assert torch.all(w[-margin * scale:] == 0)
    assert torch.allclose(total, torch.ones_like(total))


def local_network(scale=1, shrink=1):
    """A network that sees one unit around each output pixel (a 3×3 box filter over units), then resizes."""
    def run(x):
        if shrink > 1:
            x = F.avg_pool2d(x, shrink)
        x = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        return F.interpolate(x, scale_factor=scale, mode="nearest") if scale > 1 else x
    return run


def test_growing_and_shrinking_runs_equal_one_untiled_pass_when_the_field_fits():
    image = torch.rand(1, 3, 96, 80, generator=torch.Generator().manual_seed(0))
    # tile and overlap in units; the overlap leaves a margin (overlap // 4) of at least the network's one unit
    for scale, shrink, tile, overlap in ((4, 1, 32, 16), (1, 8, 6, 4), (1, 1, 24, 8)):
        run = local_network(scale, shrink)
        tiled = run_tiled(run, image, tile=tile, overlap=overlap, scale=scale, shrink=shrink)
        assert tiled.shape == run(image).shape
        assert (tiled - run(image)).abs().max() < 1e-6, (scale, shrink)


def test_tile_count_is_the_tiles_run_tiled_calls_the_network_on():
    calls = []
    run = local_network(1, 8)
    run_tiled(run, torch.rand(1, 3, 256, 192), tile=8, overlap=2, shrink=8, on_tile=lambda: calls.append(1))
    assert len(calls) == tile_count(256, 192, 8, 2, shrink=8) == len(tile_starts(32, 8, 2)) * len(tile_starts(24, 8, 2))
