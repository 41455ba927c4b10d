"""Tiling engine: plans, weights, and tiled == whole-frame inference."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
import torch
from conftest import compact, random_network, rrdb

from vs_coreml_esrgan.architectures import receptive_radius
from vs_coreml_esrgan.tiling import choose_tile_size, plan_axis, plan_tiles, upscale_tiled


def _torch_infer(network):
    def infer(tiles: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return network(torch.from_numpy(tiles).float()).numpy()
    return infer


def _summed_weights(axis) -> np.ndarray:
    total = np.zeros(axis.length * axis.scale)
    for span in axis.spans:
        total[span.start:span.stop] += span.weights
    return total


@pytest.mark.parametrize(("length", "tile", "overlap", "scale"), [
    (1920, 510, 16, 4), (1080, 387, 16, 4), (100, 100, 16, 2), (101, 100, 16, 2),
    (1000, 33, 16, 1), (1000, 35, 16, 3), (777, 64, 8, 2), (50, 64, 16, 4), (5, 3, 0, 2)])
def test_axis_plan_invariants(length, tile, overlap, scale):
    axis = plan_axis(length, tile, overlap, scale)
    starts = axis.starts
    assert starts[0] == 0
    assert starts[-1] + tile == max(length, tile)  # last tile shifted inward, not padded
    assert all(b > a for a, b in pairwise(starts))
    for a, b in pairwise(starts):
        assert a + tile - b >= 2 * overlap + axis.feather  # every overlap wide enough
    np.testing.assert_allclose(_summed_weights(axis), 1.0, atol=1e-6)
    for k, (start, span) in enumerate(zip(starts, axis.spans, strict=True)):
        # weights are zero on the context pixels next to inner edges
        lo = start * scale + (overlap * scale if k > 0 else 0)
        hi = (start + tile) * scale - (overlap * scale if k < len(starts) - 1 else 0)
        assert lo <= span.start and span.stop <= hi


def test_feathered_not_hard_cut():
    axis = plan_axis(1000, 200, 16, 2)
    ramp = axis.spans[1].weights[:axis.spans[1].flat_start - axis.spans[1].start]
    assert axis.feather == 8
    assert ramp.size == 8 * 2 and np.all(np.diff(ramp) > 0) and 0 < ramp[0] < ramp[-1] < 1


def test_fewest_tiles_that_fit():
    axis = plan_axis(1920, 512, 16, 4)
    # 512 - 2 * 16 - 8 = 472 per step: (1920 - 512) / 472 = 2.98 -> 3 steps, 4 tiles
    assert len(axis.starts) == 4


@pytest.mark.parametrize(("width", "height"), [(1920, 1080), (1280, 720), (640, 360),
                                               (720, 480)])
def test_default_tiles_waste_little(width, height):
    tile = choose_tile_size(width, height, 16)
    assert max(tile) <= 512
    plan = plan_tiles(width, height, tile, 16, 4)
    assert plan.compute_waste <= 1.15, (tile, plan.compute_waste)


def test_choose_tile_respects_multiple():
    assert all(t % 4 == 0 for t in choose_tile_size(1919, 1079, 16, multiple_of=4))
    assert choose_tile_size(63, 47, 16, multiple_of=2) == (64, 48)


def test_choose_tile_respects_minimum():
    """A model's minimum input size (spandrel's size requirements) bounds the tile from
    below, also for a frame smaller than it (which is then padded)."""
    assert choose_tile_size(10, 7, 2, minimum=16) == (16, 16)
    assert choose_tile_size(10, 30, 2, multiple_of=4, minimum=14) == (16, 32)
    assert choose_tile_size(1000, 20, 4, minimum=300)[0] >= 300


def test_tile_smaller_than_twice_overlap():
    with pytest.raises(ValueError, match=r"tile 32 is smaller than 2 x overlap \+ 1 = 33"):
        plan_tiles(100, 100, (32, 64), 16, 2)


@pytest.mark.parametrize(("tile", "overlap", "batch"), [
    ((64, 48), 18, 1), ((48, 40), 18, 3), ((80, 37), 18, 2), ((64, 64), 20, 4)])
def test_tiled_equals_whole_frame_within_receptive_field(tile, overlap, batch):
    """SRVGGNetCompact num_conv=16 sees 18 pixels: with overlap >= 18 tiling is exact."""
    spec = compact(scale=2, num_conv=16, num_feat=8)
    assert receptive_radius("Compact", spec.kwargs) == 18
    network = random_network(spec, std=0.15)
    image = np.random.default_rng(1).random((3, 97, 131), dtype=np.float32)
    with torch.inference_mode():
        whole = network(torch.from_numpy(image)[None]).numpy()[0]
    plan = plan_tiles(131, 97, tile, overlap, 2)
    assert plan.num_tiles > 1
    tiled = upscale_tiled(image, plan, _torch_infer(network), batch=batch)
    scale_of_values = np.abs(whole).max()
    np.testing.assert_allclose(tiled, whole, atol=1e-5 * scale_of_values, rtol=0)


def test_too_little_overlap_shows():
    """The property is not vacuous: with overlap below the radius, tiles differ."""
    network = random_network(compact(scale=2, num_conv=16, num_feat=8), std=0.15)
    image = np.random.default_rng(1).random((3, 97, 131), dtype=np.float32)
    with torch.inference_mode():
        whole = network(torch.from_numpy(image)[None]).numpy()[0]
    tiled = upscale_tiled(image, plan_tiles(131, 97, (64, 48), 4, 2), _torch_infer(network))
    assert np.abs(tiled - whole).max() > 1e-3


def test_every_call_gets_a_full_batch_of_fixed_tiles():
    calls = []

    def infer(tiles):
        calls.append((tiles.shape, tiles.dtype))
        return np.repeat(np.repeat(tiles.astype(np.float32), 2, 2), 2, 3)

    image = np.random.default_rng(2).random((3, 70, 110), dtype=np.float32)
    plan = plan_tiles(110, 70, (40, 40), 8, 2)
    out = upscale_tiled(image, plan, infer, batch=4, dtype=np.float16)
    assert plan.num_tiles % 4 != 0  # so the last batch had to be filled up
    assert len(calls) == -(-plan.num_tiles // 4)
    assert set(calls) == {((4, 3, 40, 40), np.dtype(np.float16))}
    expected = np.repeat(np.repeat(image.astype(np.float16).astype(np.float32), 2, 1), 2, 2)
    np.testing.assert_allclose(out, expected, atol=1e-6)


@pytest.mark.parametrize(("width", "height"), [(20, 13), (1, 1), (5, 40)])
def test_frame_smaller_than_tile_is_padded(width, height):
    image = np.random.default_rng(3).random((3, height, width), dtype=np.float32)
    seen = []

    def infer(tiles):
        seen.append(tiles.copy())
        return np.repeat(np.repeat(tiles, 3, 2), 3, 3)

    plan = plan_tiles(width, height, (24, 16), 4, 3)
    out = upscale_tiled(image, plan, infer)
    assert out.shape == (3, height * 3, width * 3)
    np.testing.assert_allclose(out, np.repeat(np.repeat(image, 3, 1), 3, 2), atol=1e-6)
    tile = seen[0][0]
    assert tile.shape == (3, 16, 24)
    if width > 1 and height > 1:  # reflection: the pixel after the edge mirrors the one before
        rows = min(height, 16)
        np.testing.assert_array_equal(tile[:, :rows, width], image[:, :rows, width - 2])


def test_odd_frame_through_x2_rrdbnet():
    spec = rrdb(scale=2)
    network = random_network(spec)
    image = np.random.default_rng(4).random((3, 47, 63), dtype=np.float32)
    tile = choose_tile_size(63, 47, 16, multiple_of=spec.multiple_of)
    plan = plan_tiles(63, 47, tile, 16, 2)
    out = upscale_tiled(image, plan, _torch_infer(network))
    assert out.shape == (3, 94, 126)
    padded = np.pad(image, ((0, 0), (0, 1), (0, 1)), mode="reflect")
    with torch.inference_mode():
        whole = network(torch.from_numpy(padded)[None]).numpy()[0, :, :94, :126]
    np.testing.assert_allclose(out, whole, atol=1e-6)


def test_backend_returning_wrong_shape():
    plan = plan_tiles(32, 32, (32, 32), 4, 2)
    with pytest.raises(ValueError, match=r"backend returned shape \(1, 3, 32, 32\)"):
        upscale_tiled(np.zeros((3, 32, 32), np.float32), plan, lambda t: t)


def test_backend_returning_wrong_shape_among_many_tiles():
    plan = plan_tiles(96, 64, (40, 40), 4, 2)
    assert plan.num_tiles > 2  # the error comes from the helper thread's stitching
    with pytest.raises(ValueError, match=r"backend returned shape \(1, 3, 40, 40\)"):
        upscale_tiled(np.zeros((3, 64, 96), np.float32), plan, lambda t: t)


def test_inference_runs_on_the_calling_thread():
    """Runtimes keep per-thread state (OpenMP teams, scratch memory): every batch of a
    frame, and every frame, goes to the backend from the caller's own thread."""
    import threading

    callers = set()

    def infer(tiles: np.ndarray) -> np.ndarray:
        callers.add(threading.get_ident())
        return np.repeat(np.repeat(tiles, 2, axis=2), 2, axis=3)

    plan = plan_tiles(96, 64, (40, 40), 4, 2)
    image = np.random.default_rng(0).random((3, 64, 96)).astype(np.float32)
    for _ in range(2):
        out = upscale_tiled(image, plan, infer)
        np.testing.assert_allclose(out, np.repeat(np.repeat(image, 2, 1), 2, 2), atol=1e-6)
    assert callers == {threading.get_ident()}


def test_fit_tile_to_frame():
    """For backends taking any size: never larger than the frame rounded up to the model's
    multiple (and at least its minimum), never larger than asked."""
    from vs_coreml_esrgan.tiling import fit_tile_to_frame

    assert fit_tile_to_frame((512, 512), 45, 31) == (45, 31)
    assert fit_tile_to_frame((512, 512), 45, 31, multiple_of=4) == (48, 32)
    assert fit_tile_to_frame((40, 512), 45, 31, multiple_of=4) == (40, 32)
    assert fit_tile_to_frame((512, 512), 10, 7, multiple_of=8, minimum=16) == (16, 16)
    assert fit_tile_to_frame((512, 512), 45, 31, multiple_of=4, square=True) == (48, 48)
    assert fit_tile_to_frame((64, 64), 1920, 1080) == (64, 64)
