"""Running a network over a large picture in overlapping tiles and blending the results back together.

Two callers: upscale models (the output is ``scale`` times the input) and the VAE (decode: 8× larger, encode:
8× smaller). Positions are counted in *units*: one unit is ``shrink`` input pixels and ``scale`` output pixels,
so a decoder (scale 8, shrink 1), an encoder (scale 1, shrink 8) and a 4× upscaler (scale 4, shrink 1) share
one grid of tiles and one set of blend weights. Memory for the network's activations is bounded by the tile.
"""
from __future__ import annotations

from typing import Callable

import torch


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Where tiles of ``tile`` units start along an axis so consecutive ones overlap by at least ``overlap``.

    The last tile is pushed back to end exactly at the border (it then overlaps its neighbour by more),
    so every tile has the full size and no tile hangs over the edge."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    return list(range(0, length - tile, stride)) + [length - tile]


def axis_weights(starts: list[int], index: int, size: int, margin: int, scale: int) -> torch.Tensor:
    """Blend weights, in output pixels, of tile ``index`` along one axis.

    Where the tile overlaps a neighbour, its weight is 0 for the ``margin`` units nearest its own edge
    (those saw zero padding instead of the neighbouring picture), then ramps linearly to 1. The neighbour's
    ramp mirrors it, so the two weights add up to 1 across the overlap. At the picture's border there is no
    neighbour and the weight stays 1."""
    weights = torch.ones(size * scale)
    position = torch.arange(size * scale, dtype=torch.float32) + 0.5
    edge = margin * scale
    if index > 0:
        shared = (starts[index - 1] + size - starts[index]) * scale
        weights = torch.minimum(weights, _ramp(position, edge, shared))
    if index < len(starts) - 1:
        shared = (starts[index] + size - starts[index + 1]) * scale
        weights = torch.minimum(weights, _ramp(position.flip(0), edge, shared))
    return weights


def _ramp(distance: torch.Tensor, edge: int, shared: int) -> torch.Tensor:
    """0 up to ``edge`` from the tile's edge, then linear up to 1 at ``shared - edge``."""
    width = shared - 2 * edge
    if width <= 0:  # tiles merely touch: nothing to blend
        return torch.ones_like(distance)
    return ((distance - edge) / width).clamp(0, 1)


def tile_count(height: int, width: int, tile: int, overlap: int, shrink: int = 1) -> int:
    """How many tiles :func:`run_tiled` runs on one (…, height, width) input."""
    return len(tile_starts(height // shrink, tile, overlap)) * len(tile_starts(width // shrink, tile, overlap))


def tile_counter(report: Callable[[int, int], None], total: int) -> Callable[[], None]:
    """An ``on_tile`` for :func:`run_tiled` that calls ``report(done, total)`` after each tile (a node passes
    ``ctx.progress``, which also stops a cancelled run between tiles)."""
    done = 0

    def on_tile() -> None:
        nonlocal done
        done += 1
        report(done, total)

    return on_tile


def run_tiled(run: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, tile: int, overlap: int,
              scale: int = 1, shrink: int = 1, on_tile: Callable[[], None] | None = None) -> torch.Tensor:
    """``run`` over one input (1, C, H, W) in overlapping tiles: the output is (1, C', H·scale/shrink, W·scale/shrink).

    ``tile`` and ``overlap`` are in units (``shrink`` input pixels each; H and W must be multiples of it). Each
    output pixel is the weighted mean of the tiles covering it (:func:`axis_weights`), so seams are feathered.
    The weights leave out ``overlap // 4`` units at every shared tile edge: when the network's receptive field
    reaches no further than that (and it has no global operation, such as attention or group norm over the
    whole picture), the result equals one untiled pass. ``on_tile`` is called after each tile."""
    _, _, height, width = image.shape
    rows, columns = height // shrink, width // shrink
    ys, xs = tile_starts(rows, tile, overlap), tile_starts(columns, tile, overlap)
    tile_h, tile_w = min(tile, rows), min(tile, columns)
    margin = overlap // 4
    weights_y = [axis_weights(ys, i, tile_h, margin, scale) for i in range(len(ys))]
    weights_x = [axis_weights(xs, i, tile_w, margin, scale) for i in range(len(xs))]
    total_y, total_x = torch.zeros(rows * scale), torch.zeros(columns * scale)
    for y, w in zip(ys, weights_y):
        total_y[y * scale:(y + tile_h) * scale] += w
    for x, w in zip(xs, weights_x):
        total_x[x * scale:(x + tile_w) * scale] += w
    output: torch.Tensor | None = None
    for y, w_y in zip(ys, weights_y):
        for x, w_x in zip(xs, weights_x):
            piece = run(image[:, :, y * shrink:(y + tile_h) * shrink, x * shrink:(x + tile_w) * shrink]).float().cpu()
            expected = (tile_h * scale, tile_w * scale)
            if tuple(piece.shape[-2:]) != expected:
                raise RuntimeError(f"the network returned a {tuple(piece.shape[-2:])} tile for a "
                                   f"{(tile_h * shrink, tile_w * shrink)} input; expected {expected}")
            if output is None:
                output = torch.zeros(1, piece.shape[1], rows * scale, columns * scale)
            region = (slice(None), slice(None), slice(y * scale, (y + tile_h) * scale), slice(x * scale, (x + tile_w) * scale))
            output[region] += piece * (w_y[:, None] * w_x[None, :])
            if on_tile is not None:
                on_tile()
    assert output is not None
    # the tiles form a grid, so the summed 2-D weight is the product of the per-axis sums
    return output / (total_y[:, None] * total_x[None, :])
