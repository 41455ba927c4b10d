"""Tiles in, frame planes out: each upscaled tile written straight into the output frame.

The tiling engine's writer (see :mod:`vs_coreml_esrgan.tiling` for the plan and weights).
Of each tile, the part whose weight is one goes into the frame's planes in one pass
(clamped to [0, 1], scaled, rounded to nearest even, converted); only the cross-fade bands
that neighbouring tiles share pass through small float32 accumulators: one per horizontal
band (the band's rows, the frame's width), one per vertical band within a tile row. The
tile that contributes last to a pixel finishes it. No frame-sized float array exists, and
non-finite values are found per tile, on data already in cache.

The result equals :func:`vs_coreml_esrgan.tiling.upscale_tiled` followed by clamping,
scaling and rounding, bit for bit: same weights, same products, same order of sums.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from .pixel_kernels import ADD, DIRECT, FINISH, STORE, Kernels, best_kernels
from .tiling import AxisPlan, Infer, Span, TilePlan, run_tiles


class NonFiniteOutput(ValueError):
    """The network returned NaN or infinity for ``count`` of the ``total`` output values."""

    def __init__(self, count: int, total: int) -> None:
        super().__init__(f"the network computed {count} NaN or infinite values of {total}")
        self.count = count
        self.total = total


@dataclass(frozen=True)
class _Piece:
    """A run of output pixels of one tile along one axis."""

    start: int
    stop: int
    weights: np.ndarray | None  # float32 per pixel; None where all are one
    band: int | None  # the shared band (between tiles band and band + 1), if any
    before: bool  # an earlier tile along this axis contributes too
    after: bool  # a later one does


def axis_pieces(axis: AxisPlan) -> tuple[tuple[tuple[_Piece, ...], ...],
                                         tuple[tuple[int, int], ...]]:
    """Per tile, its pieces in output order; and the bands ``[start, stop)`` shared by
    tiles k and k + 1. ValueError when three tiles would meet (a plan this engine never
    makes: feathers are kept a step apart)."""
    spans = axis.spans
    bands = tuple((spans[k + 1].start, spans[k].stop) for k in range(len(spans) - 1))
    for (_, stop), (start, _) in pairwise(bands):
        if stop > start:
            raise ValueError(f"cross-fade bands meet (one ends at {stop}, the next starts "
                             f"at {start}); use a larger tile or a smaller overlap")
    per_tile = []
    for k, span in enumerate(spans):
        middle_start = bands[k - 1][1] if k > 0 else span.start
        middle_stop = bands[k][0] if k < len(bands) else span.stop
        pieces = [_piece(span, span.start, middle_start, k - 1, True, False) if k > 0 else None,
                  _piece(span, middle_start, middle_stop, None, False, False),
                  _piece(span, middle_stop, span.stop, k, False, True)
                  if k < len(bands) else None]
        per_tile.append(tuple(p for p in pieces if p is not None))
    return tuple(per_tile), bands


def _piece(span: Span, start: int, stop: int, band: int | None, before: bool,
           after: bool) -> _Piece | None:
    if stop <= start:
        return None
    weights = span.weights[start - span.start:stop - span.start]
    if band is None:
        if not np.all(weights == 1.0):
            raise ValueError(f"output pixels {start}..{stop} lie outside every band but do "
                             "not have weight one")
        weights = None
    return _Piece(start, stop, weights, band, before, after)


class FrameWriter:
    """Writes a frame's upscaled tiles, given in :meth:`TilePlan.tiles` order, into its
    planes.

    ``planes``: the output frame's writable ``(H * scale, W * scale)`` arrays, one per
    output channel, all of one dtype (uint8, uint16, float16, float32); ``peak``: the
    integer code of 1.0 (``2**bits - 1``; ignored for float planes).
    """

    def __init__(self, plan: TilePlan, planes: Sequence[np.ndarray], peak: float,
                 kernels: Kernels) -> None:
        scale = plan.x.scale
        expected = (plan.y.length * scale, plan.x.length * scale)
        for plane in planes:
            if plane.shape != expected or plane.dtype != planes[0].dtype:
                raise ValueError(f"expected planes of {expected[1]}x{expected[0]}, one "
                                 f"dtype; got {plane.shape} {plane.dtype}")
        self._plan = plan
        self._planes = list(planes)
        self._peak = peak
        self._kernels = kernels
        self._y_pieces, self._y_bands = axis_pieces(plan.y)
        self._x_pieces, self._x_bands = axis_pieces(plan.x)
        self._columns = len(plan.x.starts)
        self._y_acc: dict[int, np.ndarray] = {}
        self._x_acc: dict[int, np.ndarray] = {}  # this tile row's vertical bands
        self._bad: np.ndarray | None = None  # output values that saw a non-finite value

    def add(self, index: int, tile: np.ndarray) -> None:
        """Write tile ``index``'s ``(C, th * scale, tw * scale)`` output."""
        if tile.shape[0] != len(self._planes):
            raise ValueError(f"backend returned {tile.shape[0]} channels, the frame has "
                             f"{len(self._planes)} planes")
        row, column = divmod(index, self._columns)
        y0 = self._plan.y.output_origin(row)
        x0 = self._plan.x.output_origin(column)
        for yp in self._y_pieces[row]:
            for xp in self._x_pieces[column]:
                src = tile[:, yp.start - y0:yp.stop - y0, xp.start - x0:xp.stop - x0]
                mode, acc = self._accumulator(yp, xp, tile.shape[0])
                planes = [plane[yp.start:yp.stop, xp.start:xp.stop] for plane in self._planes]
                if self._kernels.region(src, yp.weights, xp.weights, acc, mode, planes,
                                        self._peak):
                    self._mark_bad(src, yp, xp)
        if column > 0:
            self._x_acc.pop(column - 1, None)
        if column == self._columns - 1:
            self._y_acc.pop(row - 1, None)
            self._x_acc.clear()

    def _accumulator(self, yp: _Piece, xp: _Piece, channels: int
                     ) -> tuple[int, np.ndarray | None]:
        earlier = yp.before or xp.before
        later = yp.after or xp.after
        if not (earlier or later):
            return DIRECT, None
        mode = FINISH if not later else ADD if earlier else STORE
        if yp.band is not None:  # horizontal band: its rows, the frame's width
            start, stop = self._y_bands[yp.band]
            acc = self._y_acc.get(yp.band)
            if acc is None:
                width = self._plan.x.length * self._plan.x.scale
                acc = self._y_acc[yp.band] = np.empty((channels, stop - start, width),
                                                      np.float32)
            return mode, acc[:, yp.start - start:yp.stop - start, xp.start:xp.stop]
        start, stop = self._x_bands[xp.band]
        acc = self._x_acc.get(xp.band)
        if acc is None:  # vertical band: this tile row's middle rows
            acc = self._x_acc[xp.band] = np.empty((channels, yp.stop - yp.start, stop - start),
                                                  np.float32)
        return mode, acc[:, :, xp.start - start:xp.stop - start]

    def _mark_bad(self, src: np.ndarray, yp: _Piece, xp: _Piece) -> None:
        if self._bad is None:
            self._bad = np.zeros((len(self._planes), *self._planes[0].shape), bool)
        self._bad[:, yp.start:yp.stop, xp.start:xp.stop] |= ~np.isfinite(src)

    def finish(self) -> None:
        """NonFiniteOutput when a tile value that reached the frame was NaN or infinite."""
        if self._bad is not None:
            raise NonFiniteOutput(int(np.count_nonzero(self._bad)), self._bad.size)


def upscale_into(image: np.ndarray, plan: TilePlan, infer: Infer,
                 planes: Sequence[np.ndarray], *, peak: float, batch: int = 1,
                 dtype: np.dtype | type = np.float32, kernels: Kernels | None = None) -> None:
    """Upscale a ``(C, H, W)`` image tile by tile straight into an output frame's planes.

    ``image`` holds values in [0, 1] (ideally already of ``dtype``, the backend's input
    type); ``infer`` as for :func:`vs_coreml_esrgan.tiling.run_tiles`; ``planes`` and
    ``peak`` as for :class:`FrameWriter`. ``kernels``: None picks the native ones where
    built. Raises NonFiniteOutput (after writing) when the network returned NaN or
    infinity, ValueError for shapes that do not fit.
    """
    writer = FrameWriter(plan, planes, peak, kernels or best_kernels())
    run_tiles(image, plan, infer, writer.add, batch=batch, dtype=dtype)
    writer.finish()
