"""VapourSynth RGB frames <-> float numpy arrays."""

from __future__ import annotations

import numpy as np
import vapoursynth as vs

from .pixel_kernels import Kernels, best_kernels


def peak(fmt: vs.VideoFormat) -> int:
    """The integer code of 1.0 (``2**bits - 1``); 1 for float formats."""
    return (1 << fmt.bits_per_sample) - 1 if fmt.sample_type == vs.INTEGER else 1


def read_tiles_source(frame: vs.VideoFrame, dtype: np.dtype | type,
                      kernels: Kernels | None = None) -> np.ndarray:
    """A ``(planes, H, W)`` array of ``dtype`` (float16 or float32), integers scaled to
    [0, 1] (in float32, then converted), read in one pass per plane. ValueError naming the
    count when a float frame holds NaN or infinity."""
    kernels = kernels or best_kernels()
    fmt = frame.format
    out = np.empty((fmt.num_planes, frame.height, frame.width), dtype)
    scale = 1.0 / peak(fmt)
    bad = False
    for plane in range(fmt.num_planes):
        bad |= kernels.convert(np.asarray(frame[plane]), out[plane], scale)
    if bad:
        # pixels, not samples: this is the RGB conversion of the user's frame (a GRAY
        # clip's one NaN is in all three of its planes, a YUV one spreads through the matrix)
        broken = np.zeros((frame.height, frame.width), bool)
        for p in range(fmt.num_planes):
            broken |= ~np.isfinite(np.asarray(frame[p]))
        count = int(broken.sum())
        raise ValueError(f"the clip's frame holds {count} pixel{'s' * (count != 1)} with NaN "
                         "or infinite values; replace them before upscaling (e.g. with "
                         "std.Expr)")
    return out


def read_planes(frame: vs.VideoFrame) -> np.ndarray:
    """A ``(planes, H, W)`` float32 copy of a frame, integers scaled to [0, 1]."""
    fmt = frame.format
    out = np.empty((fmt.num_planes, frame.height, frame.width), np.float32)
    for plane in range(fmt.num_planes):
        out[plane] = np.asarray(frame[plane])
    if fmt.sample_type == vs.INTEGER:
        out *= np.float32(1.0 / ((1 << fmt.bits_per_sample) - 1))
    return out


def write_planes(values: np.ndarray, frame: vs.VideoFrame) -> None:
    """Write ``(planes, H, W)`` float values into a writable frame.

    Values are clamped to [0, 1]; integer formats get them scaled and rounded to nearest
    (never truncated, which would darken the picture by half a step on average).
    """
    fmt = frame.format
    expected = (fmt.num_planes, frame.height, frame.width)
    if values.shape != expected:
        raise ValueError(f"expected values of shape {expected}, got {values.shape}")
    np.clip(values, 0.0, 1.0, out=values)
    if fmt.sample_type == vs.INTEGER:
        values *= np.float32((1 << fmt.bits_per_sample) - 1)
        np.rint(values, out=values)
    for plane in range(fmt.num_planes):
        # copyto casts float32 to the plane's uint8 / uint16 / float16 / float32.
        np.copyto(np.asarray(frame[plane]), values[plane], casting="unsafe")


def count_non_finite(values: np.ndarray) -> int:
    """How many elements are NaN or infinite.

    Cheap in the common case: one summing pass without a temporary array (any NaN or
    infinity makes the sum non-finite); elements are counted only when the sum is not.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(values.sum()):
            return 0
    return int(values.size - np.count_nonzero(np.isfinite(values)))
