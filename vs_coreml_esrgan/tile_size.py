"""The tile size a filter runs: the given one checked against the model's requirements and
the overlap rule, or the planned one. One rule for explicit, automatic and compiled tiles."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

from . import tiling
from .network_spec import NetworkSpec


def checked_tile_size(tile: int | Sequence[int] | None, width: int, height: int, overlap: int,
               spec: NetworkSpec) -> tuple[int, int]:
    """The given tile checked against the model's size requirements, or the planned one."""
    if tile is None:
        chosen = tiling.choose_tile_size(width, height, overlap, multiple_of=spec.multiple_of,
                                         minimum=spec.minimum)
        return (max(chosen),) * 2 if spec.square else chosen
    sizes = tile_pair(tile)
    if spec.square and sizes[0] != sizes[1]:
        raise ValueError(f"tile {sizes[0]}x{sizes[1]} is not square, which "
                         f"{spec.describe()} needs")
    check_tile_overlap(sizes, width, height, overlap)
    for s in sizes:
        if s % spec.multiple_of or s < spec.minimum:
            raise ValueError(f"tile {s} does not meet the size requirements of "
                             f"{spec.describe()}: {spec.size_requirements}")
    return sizes[0], sizes[1]


def check_tile_overlap(tile: tuple[int, int], width: int, height: int, overlap: int, *,
                       fix: str = "use a larger tile") -> None:
    """The one rule for explicit, automatic and compiled tiles alike: a tile side shorter
    than the frame's must hold ``overlap`` context pixels on both sides and one more
    (``2 * overlap + 1``); a side that covers the frame is one tile on that axis and needs
    none. ValueError naming the tile, the frame, ``fix`` and the overlap that would do."""
    for side, length, axis in ((tile[0], width, "wide"), (tile[1], height, "high")):
        needed = 2 * overlap + 1
        if side < needed and side < length:
            raise ValueError(f"tile {side} is smaller than 2 x overlap + 1 = {needed}; "
                             f"{fix} (at least {needed}, or the whole frame, {length} "
                             f"pixels {axis}), or pass overlap={(side - 1) // 2} or less "
                             "(less context: tiled output may then differ from the whole "
                             "frame's near tile edges)")


def tile_pair(tile: int | Sequence[int]) -> tuple[int, int]:
    """An int or ``[width, height]`` as ``(width, height)``; ValueError otherwise."""
    if is_int(tile):
        sizes = [tile, tile]
    elif isinstance(tile, Sequence) and not isinstance(tile, str):
        sizes = list(tile)
    else:
        sizes = []
    if len(sizes) != 2 or not all(is_int(s) and s > 0 for s in sizes):
        raise ValueError(f"tile must be a positive int or [width, height], got {tile!r}")
    return int(sizes[0]), int(sizes[1])


def is_int(value: object) -> bool:
    """An integer, numpy's included, but not a bool (True would pass as 1)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)
