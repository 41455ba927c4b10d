"""Tiling engine: cover a frame with fixed-size tiles, run them, stitch the results.

Knows no backend: inference is any callable taking a batch of tiles ``(N, C, th, tw)`` and
returning ``(N, C, th * scale, tw * scale)``. Every call gets exactly ``batch`` tiles of
exactly the planned size (the size a Core ML model is compiled for); a short last batch is
filled up by repeating its last tile.

Along each axis, neighbouring tiles overlap by at least ``2 * overlap + feather`` input
pixels. Of each tile, the ``overlap`` pixels next to an inner edge are context only (their
weight is zero); in the middle of every overlap the two tiles cross-fade linearly over
``feather`` pixels. The weights of all tiles sum to one everywhere, so a network whose
receptive radius is at most ``overlap`` gives the same result tiled as on the whole frame.

Tiles are shifted inward at the frame's edges, never padded, when the frame is at least a
tile large; a frame axis shorter than the tile (a fixed-size Core ML package on a small
clip) is padded by reflection (edge replication for a one-pixel axis) at its end up to
the tile size. (Padding both sides, centred, was measured: the largest error stays the
same, since an edge's error no longer grows once the padding exceeds the network's reach,
and twice the area is wrong; see the README.) Backends that take any size get tiles no
larger than the frame (:func:`fit_tile_to_frame`) and need no padding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

Infer = Callable[[np.ndarray], np.ndarray]

DEFAULT_MAX_TILE = 512


@dataclass(frozen=True)
class Span:
    """Where one tile's output lands along one axis (output pixels)."""

    start: int  # first output pixel with a non-zero weight
    stop: int
    flat_start: int  # [flat_start, flat_stop) has weight exactly one
    flat_stop: int
    weights: np.ndarray  # float32, one per output pixel in [start, stop)


@dataclass(frozen=True)
class AxisPlan:
    """Tile placement along one axis, in input pixels of the (possibly padded) frame."""

    length: int
    tile: int
    starts: tuple[int, ...]
    overlap: int
    feather: int
    scale: int
    spans: tuple[Span, ...] = field(repr=False, compare=False)

    @property
    def padded_length(self) -> int:
        return max(self.length, self.tile)

    def output_origin(self, k: int) -> int:
        """Where tile k's output starts, in output pixels."""
        return self.starts[k] * self.scale


@dataclass(frozen=True)
class TilePlan:
    """Tiles covering a ``width`` x ``height`` frame: a grid of ``x.starts`` x ``y.starts``."""

    x: AxisPlan
    y: AxisPlan

    @property
    def tile_size(self) -> tuple[int, int]:
        """(width, height) of every tile, in input pixels."""
        return self.x.tile, self.y.tile

    @property
    def num_tiles(self) -> int:
        return len(self.x.starts) * len(self.y.starts)

    @property
    def compute_waste(self) -> float:
        """Computed tile area divided by frame area (1.0 means no pixel computed twice)."""
        return self.num_tiles * self.x.tile * self.y.tile / (self.x.length * self.y.length)

    def tiles(self) -> Iterator[tuple[int, int]]:
        """(x, y) input offsets of every tile, row by row."""
        for y in self.y.starts:
            for x in self.x.starts:
                yield x, y


def default_feather(overlap: int) -> int:
    return overlap // 2


def plan_axis(length: int, tile: int, overlap: int, scale: int,
              feather: int | None = None) -> AxisPlan:
    """Place tiles of ``tile`` pixels along an axis of ``length`` pixels.

    Uses the fewest tiles whose overlaps are all at least ``2 * overlap + feather``, spread
    evenly. Raises ValueError when more than one tile is needed and ``tile < 2 * overlap +
    1`` (no pixel of a tile would both be useful and have full context), or a size is not
    positive.
    """
    if length < 1 or scale < 1:
        raise ValueError(f"expected a positive length and scale, got {length} and {scale}")
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    if tile < 2 * overlap + 1 and length > tile:
        raise ValueError(f"tile {tile} is smaller than 2 x overlap + 1 = {2 * overlap + 1}")
    if tile < 1:
        raise ValueError(f"tile must be positive, got {tile}")
    feather = default_feather(overlap) if feather is None else feather
    # Keep feathers at least one step apart so cross-fades of neighbouring overlaps never
    # meet (see the module docstring), and keep the step at least one pixel.
    feather = max(0, min(feather, (tile - 2 * overlap) // 3))
    if length <= tile:
        starts: tuple[int, ...] = (0,)
    else:
        max_step = tile - 2 * overlap - feather
        count = math.ceil((length - tile) / max_step) + 1
        starts = tuple(round(i * (length - tile) / (count - 1)) for i in range(count))
    spans = tuple(_spans(length, tile, starts, feather, scale))
    return AxisPlan(length=length, tile=tile, starts=starts, overlap=overlap,
                    feather=feather, scale=scale, spans=spans)


def _spans(length: int, tile: int, starts: tuple[int, ...], feather: int,
           scale: int) -> Iterator[Span]:
    # Cross-fade k happens around the middle of the overlap of tiles k and k + 1, in output
    # pixels [centre - half, centre + half).
    centres = [(starts[k + 1] + starts[k] + tile) * scale / 2 for k in range(len(starts) - 1)]
    half = feather * scale / 2
    out_length = length * scale
    for k in range(len(starts)):
        start = 0 if k == 0 else math.floor(centres[k - 1] - half)
        stop = out_length if k == len(starts) - 1 else math.ceil(centres[k] + half)
        position = np.arange(start, stop, dtype=np.float64) + 0.5
        weights = np.ones(stop - start, dtype=np.float64)
        if k > 0:
            weights *= _ramp(position, centres[k - 1], half)
        if k < len(starts) - 1:
            weights *= 1.0 - _ramp(position, centres[k], half)
        flat = np.flatnonzero(weights == 1.0)
        flat_start, flat_stop = (start + int(flat[0]), start + int(flat[-1]) + 1) if flat.size \
            else (start, start)
        yield Span(start=start, stop=stop, flat_start=flat_start, flat_stop=flat_stop,
                    weights=weights.astype(np.float32))


def _ramp(position: np.ndarray, centre: float, half: float) -> np.ndarray:
    """0 before ``centre - half``, 1 from ``centre + half``, linear between."""
    if half == 0:
        return (position >= centre).astype(np.float64)
    return np.clip((position - (centre - half)) / (2 * half), 0.0, 1.0)


def plan_tiles(width: int, height: int, tile: tuple[int, int], overlap: int, scale: int,
               feather: int | None = None) -> TilePlan:
    """Plan tiles of ``tile = (tw, th)`` input pixels for a ``width`` x ``height`` frame."""
    return TilePlan(x=plan_axis(width, tile[0], overlap, scale, feather),
                    y=plan_axis(height, tile[1], overlap, scale, feather))


def choose_tile_size(width: int, height: int, overlap: int, *, multiple_of: int = 1,
                     minimum: int = 0, max_tile: int = DEFAULT_MAX_TILE,
                     feather: int | None = None) -> tuple[int, int]:
    """The tile size that covers the frame with the least computed area.

    Per axis: the smallest tile count whose evenly sized tiles, each at most ``max_tile``,
    at least ``minimum`` and a multiple of ``multiple_of`` (the model's size requirements),
    still overlap by ``2 * overlap + feather``. A frame smaller than ``minimum`` gets a tile
    of ``minimum`` (the frame is padded up to it).
    """
    return (_choose_axis(width, overlap, multiple_of, minimum, max_tile, feather),
            _choose_axis(height, overlap, multiple_of, minimum, max_tile, feather))


def _choose_axis(length: int, overlap: int, multiple_of: int, minimum: int, max_tile: int,
                 feather: int | None) -> int:
    feather = default_feather(overlap) if feather is None else feather
    max_tile -= max_tile % multiple_of
    if max_tile < max(2 * overlap + 1, minimum):
        raise ValueError(f"max_tile {max_tile} is smaller than 2 x overlap + 1 or the "
                         f"model's minimum {minimum}")
    count = 1
    while True:
        tile = math.ceil((length + (count - 1) * (2 * overlap + feather)) / count)
        if count > 1:
            tile = max(tile, 2 * overlap + 1)
        tile = max(tile, minimum)
        tile = -(-tile // multiple_of) * multiple_of
        if tile <= max_tile:
            return tile
        count += 1


def pad_to_tile(image: np.ndarray, plan: TilePlan) -> np.ndarray:
    """Pad a ``(C, H, W)`` image at the bottom and right to at least the tile size."""
    pad_y = plan.y.padded_length - image.shape[1]
    pad_x = plan.x.padded_length - image.shape[2]
    if pad_x == 0 and pad_y == 0:
        return image
    mode = "reflect" if min(image.shape[1:]) > 1 else "edge"
    return np.pad(image, ((0, 0), (0, pad_y), (0, pad_x)), mode=mode)


def fit_tile_to_frame(tile: tuple[int, int], width: int, height: int, *,
                      multiple_of: int = 1, minimum: int = 0,
                      square: bool = False) -> tuple[int, int]:
    """``tile = (tw, th)`` shrunk, per axis, to the frame rounded up to ``multiple_of``
    (at least ``minimum``): for backends that take any input size, a tile larger than the
    frame is the frame, and the frame needs no padding (or only up to the model's
    multiple). ``square``: both sides the larger of the two. Never grows a tile."""
    def fit(size: int, length: int) -> int:
        wanted = max(-(-length // multiple_of) * multiple_of, minimum)
        return min(size, -(-wanted // multiple_of) * multiple_of)

    fitted = (fit(tile[0], width), fit(tile[1], height))
    if square:
        side = min(max(fitted), min(tile))
        return side, side
    return fitted


def upscale_tiled(image: np.ndarray, plan: TilePlan, infer: Infer, *, batch: int = 1,
                  dtype: np.dtype | type = np.float32) -> np.ndarray:
    """Upscale a ``(C, H, W)`` float image tile by tile.

    ``infer`` gets ``(batch, C, th, tw)`` arrays of ``dtype`` and must return
    ``(batch, C', th * scale, tw * scale)``. Returns a float32 ``(C', H * scale, W * scale)``
    array; values are not clamped. (The filter writes tiles straight into frame planes
    instead: :func:`vs_coreml_esrgan.stitching.upscale_into`.)
    """
    height, width = image.shape[1:]
    scale = plan.x.scale
    columns = len(plan.x.starts)
    out: np.ndarray | None = None

    def stitch(index: int, tile: np.ndarray) -> None:
        nonlocal out
        if out is None:
            out = np.zeros((tile.shape[0], height * scale, width * scale), np.float32)
        row, column = divmod(index, columns)
        _accumulate(out, tile, plan.x.output_origin(column), plan.y.output_origin(row),
                    plan.x.spans[column], plan.y.spans[row])

    run_tiles(image, plan, infer, stitch, batch=batch, dtype=dtype)
    assert out is not None
    return out


def run_tiles(image: np.ndarray, plan: TilePlan, infer: Infer,
              stitch: Callable[[int, np.ndarray], None], *, batch: int = 1,
              dtype: np.dtype | type = np.float32) -> None:
    """Cut a ``(C, H, W)`` image into the plan's tiles, run them, and hand each result to
    ``stitch(tile index, (C', th * scale, tw * scale) output)``, in :meth:`TilePlan.tiles`
    order, one call at a time.

    ``infer`` gets ``(batch, C, th, tw)`` arrays of ``dtype`` (a short last batch repeats
    its last tile). While ``infer`` runs on one batch (in the calling thread), a helper
    thread cuts out the next batch and stitches the previous one. ValueError for an image
    of the wrong size, ``batch < 1`` or a backend result of the wrong shape.
    """
    channels, height, width = image.shape
    if (width, height) != (plan.x.length, plan.y.length):
        raise ValueError(f"image is {width}x{height}, plan is for "
                         f"{plan.x.length}x{plan.y.length}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    source = pad_to_tile(image, plan)
    scale = plan.x.scale
    tw, th = plan.tile_size
    offsets = list(plan.tiles())
    groups = [range(first, min(first + batch, len(offsets)))
              for first in range(0, len(offsets), batch)]

    def cut(group: range) -> np.ndarray:
        tiles = np.empty((batch, channels, th, tw), dtype=dtype)
        for i in range(batch):
            x, y = offsets[group[min(i, len(group) - 1)]]
            tiles[i] = source[:, y:y + th, x:x + tw]
        return tiles

    def stitch_group(group: range, result: np.ndarray) -> None:
        expected = (batch, th * scale, tw * scale)
        if result.ndim != 4 or (result.shape[0], *result.shape[2:]) != expected:
            raise ValueError(f"backend returned shape {result.shape}, expected "
                             f"({batch}, C, {th * scale}, {tw * scale})")
        for i, index in enumerate(group):
            stitch(index, result[i])

    if len(groups) == 1:  # nothing to overlap
        stitch_group(groups[0], infer(cut(groups[0])))
        return
    # Inference stays on the calling thread: runtimes keep per-thread state (OpenMP
    # teams, oneDNN scratch memory) that a new thread per frame would rebuild, which
    # cost ~15 % of a 480x270 frame on the CPU.
    with ThreadPoolExecutor(max_workers=1) as helper:
        tiles = cut(groups[0])
        stitched: Future[None] | None = None
        for index, group in enumerate(groups):
            upcoming = (helper.submit(cut, groups[index + 1])
                        if index + 1 < len(groups) else None)
            result = infer(tiles)
            if stitched is not None:
                stitched.result()  # raises what stitching raised
            stitched = helper.submit(stitch_group, group, result)
            if upcoming is not None:
                tiles = upcoming.result()
        assert stitched is not None
        stitched.result()


def _accumulate(out: np.ndarray, tile: np.ndarray, x0: int, y0: int, span_x: Span,
                span_y: Span) -> None:
    """Add one upscaled tile, placed at output (x0, y0), into ``out`` with its weights.

    The weight-one core is copied; only the cross-fade bands are multiplied.
    """
    ys = _segments(span_y)
    xs = _segments(span_x)
    for ya, yb, y_flat in ys:
        for xa, xb, x_flat in xs:
            src = tile[:, ya - y0:yb - y0, xa - x0:xb - x0]
            if y_flat and x_flat:
                out[:, ya:yb, xa:xb] = src
                continue
            weight = (span_y.weights[ya - span_y.start:yb - span_y.start, None]
                      * span_x.weights[None, xa - span_x.start:xb - span_x.start])
            out[:, ya:yb, xa:xb] += src * weight


def _segments(span: Span) -> list[tuple[int, int, bool]]:
    """[start, stop) pieces of a span, each flagged whether its weight is exactly one."""
    pieces = [(span.start, span.flat_start, False), (span.flat_start, span.flat_stop, True),
              (span.flat_stop, span.stop, False)]
    return [p for p in pieces if p[1] > p[0]]
