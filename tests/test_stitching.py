"""Tiles straight into frame planes: the fused writer and its kernels, native and numpy,
against the float32 stitching of ``upscale_tiled`` followed by clamp, scale and round."""

from __future__ import annotations

import numpy as np
import pytest

from vs_coreml_esrgan.pixel_kernels import NumpyKernels, native_kernels
from vs_coreml_esrgan.stitching import NonFiniteOutput, axis_pieces, upscale_into
from vs_coreml_esrgan.tiling import plan_axis, plan_tiles, upscale_tiled

NATIVE = native_kernels()
needs_native = pytest.mark.skipif(NATIVE is None, reason="the C kernels are not built "
                                  "(python native/build_plugin.py)")
KERNELS = [NumpyKernels(), pytest.param(NATIVE, marks=needs_native, id="native")]
OUTPUTS = [(np.uint8, 255), (np.uint16, 1023), (np.uint16, 65535), (np.float16, 1),
           (np.float32, 1)]


def content_infer(scale: int, out_dtype: type):
    """A backend whose output depends on every input value nearby and on the channel,
    overshooting [0, 1] so clamping matters."""
    def infer(tiles: np.ndarray) -> np.ndarray:
        x = tiles.astype(np.float32)
        mixed = x + 0.3 * np.roll(x, 1, axis=1) - 0.2 * np.roll(x, 1, axis=3)
        up = mixed.repeat(scale, axis=2).repeat(scale, axis=3)
        ramp = np.linspace(-0.1, 0.1, up.shape[3], dtype=np.float32)
        return (up * 1.1 - 0.05 + ramp + 0.03 * np.sin(up * 40)).astype(out_dtype)
    return infer


def reference(image, plan, infer, dtype, out_dtype, peak, batch) -> np.ndarray:
    """The pipeline before the fused writer: float32 frame, then clamp, scale, round."""
    values = upscale_tiled(image, plan, infer, batch=batch, dtype=dtype)
    np.clip(values, 0.0, 1.0, out=values)
    if np.dtype(out_dtype).kind == "u":
        values = np.rint(values * np.float32(peak))
    return values.astype(out_dtype)


CASES = [  # width, height, tile, overlap, scale, batch
    (131, 97, (64, 48), 4, 2, 1),  # odd sizes, many tiles
    (131, 97, (64, 48), 4, 2, 3),  # batch > 1 with a short last batch
    (40, 30, (64, 64), 4, 4, 1),  # frame smaller than the tile
    (64, 48, (64, 48), 8, 4, 1),  # exactly one tile
    (200, 45, (64, 64), 8, 3, 2),  # wide: tiles along x only, padded along y
    (1, 1, (8, 8), 0, 2, 1),  # a one-pixel frame
    (77, 5, (32, 32), 3, 1, 1),  # scale 1, one-pixel-thin bands
    (150, 150, (40, 40), 6, 3, 4),  # odd scale: half-pixel cross-fade centres
]


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize(("out_dtype", "peak"), OUTPUTS)
@pytest.mark.parametrize("tile_dtype", [np.float16, np.float32])
@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}x{c[1]}-t{c[2][0]}x{c[2][1]}-s{c[4]}"
                                             f"-b{c[5]}" for c in CASES])
def test_writer_equals_float_stitching(case, tile_dtype, out_dtype, peak, kernels):
    width, height, tile, overlap, scale, batch = case
    rng = np.random.default_rng(width * height)
    image = rng.random((3, height, width), dtype=np.float32).astype(tile_dtype)
    plan = plan_tiles(width, height, tile, overlap, scale)
    infer = content_infer(scale, tile_dtype)
    expected = reference(image, plan, infer, tile_dtype, out_dtype, peak, batch)
    planes = [np.full((height * scale, width * scale), 7, out_dtype) for _ in range(3)]
    upscale_into(image, plan, infer, planes, peak=peak, batch=batch, dtype=tile_dtype,
                 kernels=kernels)
    # bit for bit: same weights, products and order of sums (no fused multiply-add)
    np.testing.assert_array_equal(np.stack(planes), expected)


@needs_native
@pytest.mark.parametrize("tile_dtype", [np.float16, np.float32])
def test_native_equals_numpy_on_wild_values(tile_dtype):
    """Values far outside [0, 1], ties at .5 codes, tiny and negative ones."""
    plan = plan_tiles(97, 61, (48, 40), 5, 2)
    rng = np.random.default_rng(3)
    ties = (rng.integers(0, 256, (3, 61, 97)) + 0.5) / 255

    def infer(tiles):
        up = tiles.astype(np.float32).repeat(2, 2).repeat(2, 3)
        return (up * rng.choice([1.0, -3.0, 40.0, 1e-6], up.shape)).astype(tile_dtype)

    image = ties.astype(tile_dtype)
    results = []
    for kernels in (NumpyKernels(), NATIVE):
        for out_dtype, peak in OUTPUTS:
            planes = [np.zeros((122, 194), out_dtype) for _ in range(3)]
            rng = np.random.default_rng(4)  # the same "network" for both kernels
            upscale_into(image, plan, infer, planes, peak=peak, dtype=tile_dtype,
                         kernels=kernels)
            results.append(np.stack(planes))
    for numpy_result, native_result in zip(results[:5], results[5:], strict=True):
        np.testing.assert_array_equal(native_result, numpy_result)


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("source", [np.uint8, np.uint16, np.float16, np.float32])
@pytest.mark.parametrize("target", [np.float16, np.float32])
def test_convert_equals_scaled_float32(source, target, kernels):
    rng = np.random.default_rng(0)
    if np.dtype(source).kind == "u":
        plane = rng.integers(0, np.iinfo(source).max + 1, (37, 1029)).astype(source)
        scale = 1.0 / np.iinfo(source).max
    else:  # ties, subnormals, overflow to float16 infinity, in the C's scalar tails too
        special = [1 + 2**-11, 2**-20, 6e-8, 3e-8, -2**-24, 2**-14 - 2**-25, 65504.0]
        if source == np.float32:  # finite here, beyond float16's range
            special += [65519.0, 65520.0, 1e5]
        values = np.concatenate([rng.random(37 * 1029 - len(special)), special])
        plane = values.reshape(37, 1029).astype(source)
        scale = 1.0
    out = np.empty(plane.shape, target)
    assert not kernels.convert(plane, out, scale)
    with np.errstate(over="ignore"):
        expected = (plane.astype(np.float32) * np.float32(scale) if scale != 1.0
                    else plane.astype(np.float32)).astype(target)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_convert_reports_non_finite_samples(kernels, bad):
    plane = np.zeros((5, 1030), np.float32)
    plane[4, 1029] = bad  # the last sample: a scalar tail in the C
    assert kernels.convert(plane, np.empty(plane.shape, np.float16), 1.0)


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("tile_dtype", [np.float16, np.float32])
def test_non_finite_output_is_counted_after_writing(kernels, tile_dtype):
    plan = plan_tiles(90, 50, (48, 32), 4, 2)  # 2 x 2 tiles
    poisoned = {(0, 0, 3, 5): np.nan, (2, 1, 40, 60): np.inf}  # (tile, channel, y, x)

    def infer(tiles, calls=[0]):  # noqa: B006 - counts the calls of this one run
        out = tiles.repeat(2, 2).repeat(2, 3).astype(tile_dtype)
        for (tile, channel, y, x), value in poisoned.items():
            if calls[0] == tile:
                out[0, channel, y, x] = value
        calls[0] += 1
        return out

    planes = [np.zeros((100, 180), np.uint8) for _ in range(3)]
    with pytest.raises(NonFiniteOutput, match="2 NaN or infinite values of 54000"):
        upscale_into(np.full((3, 50, 90), 0.5, tile_dtype), plan, infer, planes, peak=255,
                     dtype=tile_dtype, kernels=kernels)


def test_bands_are_shared_by_exactly_two_tiles():
    """Every output pixel belongs to one tile's middle or to one band of two tiles; the
    middles have weight one."""
    for length, tile, overlap, scale in [(1920, 510, 16, 4), (1000, 35, 16, 3),
                                         (777, 64, 8, 2), (5, 3, 0, 2), (50, 64, 16, 4)]:
        axis = plan_axis(length, tile, overlap, scale)
        pieces, bands = axis_pieces(axis)
        cover = np.zeros(length * scale, int)
        for k, tile_pieces in enumerate(pieces):
            for piece in tile_pieces:
                cover[piece.start:piece.stop] += 1
                if piece.band is None:
                    assert piece.weights is None
                else:
                    assert bands[piece.band] == (piece.start, piece.stop)
                    assert piece.band in (k - 1, k)
        band_pixels = np.zeros(length * scale, bool)
        for start, stop in bands:
            band_pixels[start:stop] = True
        assert np.all(cover[band_pixels] == 2) and np.all(cover[~band_pixels] == 1)
