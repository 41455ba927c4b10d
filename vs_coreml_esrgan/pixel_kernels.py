"""The tiling engine's per-pixel loops: native (native/tile_kernels.c) and their numpy twin.

Two operations, each one pass over data already in cache:

- :meth:`Kernels.region`: one rectangle of an upscaled tile into the frame's planes:
  weighted into a float32 accumulator, or finished (clamped to [0, 1], scaled to the
  integer peak and rounded to nearest even, or stored as float16 / float32) straight into
  the planes, with a report of NaN or infinite tile values.
- :meth:`Kernels.convert`: a frame plane into the tiles' float16 / float32 source, scaled.

:class:`NumpyKernels` is the reference; :class:`NativeKernels` computes the same values
(bit for bit: the C is built without fused multiply-add) without numpy's temporaries and
its slow scalar float16 conversions. :func:`best_kernels` picks the native library where
it was built (``vs_coreml_esrgan/_native/``), else the numpy twin.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

DIRECT, STORE, ADD, FINISH = 0, 1, 2, 3  # region modes, as in tile_kernels.c
_TYPES = {np.dtype(np.uint8): 0, np.dtype(np.uint16): 1, np.dtype(np.float16): 2,
          np.dtype(np.float32): 3}
_LIBRARY = "libtile_kernels.dylib" if sys.platform == "darwin" else "libtile_kernels.so"


class Kernels(Protocol):
    name: str

    def region(self, src: np.ndarray, wy: np.ndarray | None, wx: np.ndarray | None,
               acc: np.ndarray | None, mode: int, planes: Sequence[np.ndarray],
               peak: float) -> bool:
        """Write one rectangle; True when ``src`` holds a NaN or infinity.

        ``src``: ``(C, rows, cols)`` float16 / float32 tile values. ``wy`` ``(rows,)`` and
        ``wx`` ``(cols,)`` float32 weights, None where all are one; a value's weight is
        ``wy[r] * wx[c]`` in float32. ``acc``: ``(C, rows, cols)`` float32 (None for
        DIRECT). ``mode``: DIRECT ``planes = finish(src)``, STORE ``acc = w * src``, ADD
        ``acc += w * src``, FINISH ``planes = finish(acc + w * src)``. ``planes``: C
        ``(rows, cols)`` views of one dtype (uint8, uint16, float16, float32); ``peak``:
        the integer code of 1.0 (ignored for float planes). Rows of every array must be
        contiguous.
        """
        ...

    def convert(self, src: np.ndarray, dst: np.ndarray, scale: float) -> bool:
        """``dst = src * scale`` for a ``(rows, cols)`` plane of any frame sample type into
        float16 / float32 (arithmetic in float32); True when a float ``src`` sample is NaN
        or infinite."""
        ...


class NumpyKernels:
    """The reference implementation (and the fallback where the C library is missing)."""

    name = "numpy"

    def region(self, src: np.ndarray, wy: np.ndarray | None, wx: np.ndarray | None,
               acc: np.ndarray | None, mode: int, planes: Sequence[np.ndarray],
               peak: float) -> bool:
        bad = not bool(np.isfinite(src).all())
        values = src.astype(np.float32)
        if mode != DIRECT:
            weight = _weight(wy, wx, src.shape[1:])
            if weight is not None:
                values = weight * values
            if mode == STORE:
                acc[...] = values
                return bad
            if mode == ADD:
                acc += values
                return bad
            values = acc + values
        with np.errstate(invalid="ignore"):
            np.clip(values, 0.0, 1.0, out=values)
        if planes[0].dtype.kind in "ui":
            values *= np.float32(peak)
            np.rint(values, out=values)
        for plane, channel in zip(planes, values, strict=True):
            with np.errstate(invalid="ignore"):
                np.copyto(plane, channel, casting="unsafe")
        return bad

    def convert(self, src: np.ndarray, dst: np.ndarray, scale: float) -> bool:
        if src.dtype.kind == "f":
            bad = not bool(np.isfinite(src).all())
            with np.errstate(over="ignore"):  # float32 beyond float16's range: infinity
                np.copyto(dst, src, casting="unsafe")
            return bad
        values = src.astype(np.float32)
        values *= np.float32(scale)
        np.copyto(dst, values, casting="unsafe")
        return False


def _weight(wy: np.ndarray | None, wx: np.ndarray | None,
            shape: tuple[int, int]) -> np.ndarray | None:
    if wy is None and wx is None:
        return None
    rows = np.ones(shape[0], np.float32) if wy is None else wy
    cols = np.ones(shape[1], np.float32) if wx is None else wx
    return rows[:, None] * cols[None, :]


class NativeKernels:
    """ctypes bindings of native/tile_kernels.c (ctypes releases the GIL during calls, so
    frames in flight on several threads run their kernels in parallel)."""

    name = "native"

    def __init__(self, library: ctypes.CDLL) -> None:
        self._region = library.ek_region
        self._region.restype = ctypes.c_int
        p, i, d, f = ctypes.c_void_p, ctypes.c_int, ctypes.c_ssize_t, ctypes.c_float
        self._region.argtypes = [p, i, d, d, i, i, i, p, p, p, d, d, i, p, i, d, f]
        self._convert = library.ek_convert
        self._convert.restype = ctypes.c_int
        self._convert.argtypes = [p, i, d, i, i, p, i, d, f]
        library.ek_half_conversion.restype = ctypes.c_char_p
        self.half_conversion = library.ek_half_conversion().decode()

    def region(self, src: np.ndarray, wy: np.ndarray | None, wx: np.ndarray | None,
               acc: np.ndarray | None, mode: int, planes: Sequence[np.ndarray],
               peak: float) -> bool:
        channels, rows, cols = src.shape
        if rows == 0 or cols == 0:
            return False
        src = _rows_contiguous(src)
        size = src.itemsize
        first = planes[0]
        pointers = (ctypes.c_void_p * channels)(*(plane.ctypes.data for plane in planes))
        acc_strides = (0, 0) if acc is None else (acc.strides[0] // 4, acc.strides[1] // 4)
        return bool(self._region(
            src.ctypes.data, _TYPES[src.dtype], src.strides[0] // size,
            src.strides[1] // size, channels, rows, cols,
            None if wy is None else wy.ctypes.data, None if wx is None else wx.ctypes.data,
            None if acc is None else acc.ctypes.data, *acc_strides, mode, pointers,
            _TYPES[first.dtype], first.strides[0] // first.itemsize, peak))

    def convert(self, src: np.ndarray, dst: np.ndarray, scale: float) -> bool:
        rows, cols = src.shape
        if rows == 0 or cols == 0:
            return False
        return bool(self._convert(src.ctypes.data, _TYPES[src.dtype],
                                  src.strides[0] // src.itemsize, rows, cols, dst.ctypes.data,
                                  _TYPES[dst.dtype], dst.strides[0] // dst.itemsize, scale))


def _rows_contiguous(array: np.ndarray) -> np.ndarray:
    """``array`` if its last axis is contiguous and its dtype one the C takes, else a
    float32 copy (a backend may hand back strided or float64 outputs)."""
    if array.dtype in (np.float16, np.float32) and array.strides[-1] == array.itemsize:
        return array
    return np.ascontiguousarray(array, dtype=np.float32)


def library_path() -> Path:
    return Path(__file__).parent / "_native" / _LIBRARY


@functools.cache
def native_kernels() -> NativeKernels | None:
    """The C kernels, or None where the library was not built (or cannot be loaded)."""
    path = library_path()
    if not path.is_file():
        return None
    try:
        return NativeKernels(ctypes.CDLL(str(path)))
    except (OSError, AttributeError):
        return None


def best_kernels() -> Kernels:
    """The native kernels where available, else the numpy twin."""
    return native_kernels() or NumpyKernels()
