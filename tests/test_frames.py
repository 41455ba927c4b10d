"""Frame <-> array conversion: scaling, clamping and rounding (never truncation)."""

from __future__ import annotations

import numpy as np
import pytest
import vapoursynth as vs

from vs_coreml_esrgan.frames import read_planes, write_planes


def _writable(fmt: int, width: int = 4, height: int = 1) -> vs.VideoFrame:
    return vs.core.std.BlankClip(format=fmt, width=width, height=height).get_frame(0).copy()


@pytest.mark.parametrize(("fmt", "peak"), [(vs.RGB24, 255), (vs.RGB30, 1023),
                                           (vs.RGB48, 65535)])
def test_integers_round_to_nearest_and_clamp(fmt, peak):
    frame = _writable(fmt, width=6)
    values = np.array([-0.5, 0.4 / peak, 0.6 / peak, (7 + 0.49) / peak, (7 + 0.51) / peak, 1.7],
                      np.float32)
    write_planes(np.tile(values, (3, 1, 1)), frame)
    expected = [0, 0, 1, 7, 8, peak]
    for plane in range(3):
        assert np.asarray(frame[plane])[0].tolist() == expected


def test_float_formats_clamp_but_do_not_quantise():
    for fmt, dtype in ((vs.RGBS, np.float32), (vs.RGBH, np.float16)):
        frame = _writable(fmt)
        values = np.array([-0.1, 0.123456, 0.5, 1.2], np.float32)
        write_planes(np.tile(values, (3, 1, 1)), frame)
        got = np.asarray(frame[1])[0]
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, np.array([0.0, 0.123456, 0.5, 1.0], dtype))


@pytest.mark.parametrize(("fmt", "peak"), [(vs.RGB24, 255), (vs.RGB48, 65535)])
def test_read_scales_integers_to_unit_range(fmt, peak):
    frame = _writable(fmt, width=3)
    for plane in range(3):
        np.asarray(frame[plane])[0] = [0, peak // 2, peak]
    values = read_planes(frame)
    assert values.dtype == np.float32 and values.shape == (3, 1, 3)
    np.testing.assert_allclose(values[2, 0], [0.0, (peak // 2) / peak, 1.0], rtol=1e-7)


def test_round_trip_is_lossless_for_8_bit():
    frame = _writable(vs.RGB24, width=256)
    for plane in range(3):
        np.asarray(frame[plane])[0] = np.arange(256)
    copy = _writable(vs.RGB24, width=256)
    write_planes(read_planes(frame), copy)
    assert np.asarray(copy[0])[0].tolist() == list(range(256))


def test_shape_mismatch():
    with pytest.raises(ValueError, match=r"expected values of shape \(3, 1, 4\)"):
        write_planes(np.zeros((3, 2, 4), np.float32), _writable(vs.RGBS))
