"""Getting any supported clip to RGB for the network, and back to its own format."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import vapoursynth as vs

_MATRIX_NAMES = {1: "709", 4: "fcc", 5: "470bg", 6: "170m", 7: "240m", 8: "ycgco",
                 9: "2020ncl", 10: "2020cl", 12: "chromancl", 13: "chromacl", 14: "ictcp"}


@dataclass(frozen=True)
class YuvSignal:
    """How a YUV or GRAY clip's integers map to RGB: a ``resize`` matrix name and range."""

    matrix: str
    range: str  # "limited" or "full"


def signal_of(props: vs.FrameProps) -> YuvSignal:
    """Matrix and range from frame properties: ``_Matrix`` (BT.709 when absent or
    unspecified), ``_Range`` (0 limited, 1 full), else the older ``_ColorRange`` (0 full,
    1 limited), else limited."""
    matrix = _MATRIX_NAMES.get(int(props.get("_Matrix", 2)), "709")
    if "_Range" in props:
        full = int(props["_Range"]) == 1
    elif "_ColorRange" in props:
        full = int(props["_ColorRange"]) == 0
    else:
        full = False
    return YuvSignal(matrix=matrix, range="full" if full else "limited")


def to_rgb(clip: vs.VideoNode) -> tuple[vs.VideoNode, Callable[[vs.VideoNode], vs.VideoNode]]:
    """An RGB version of ``clip`` and a function that brings an (upscaled) RGB clip back to
    ``clip``'s format family and sample type.

    RGB clips pass unchanged (the filter reads every RGB sample type directly). YUV and
    GRAY become RGBS with the matrix and range of the clip's first frame (see
    :func:`signal_of`); the way back uses the same matrix and range and rounds to nearest.
    """
    fmt = clip.format
    if fmt.color_family == vs.RGB:
        return clip, lambda upscaled: upscaled
    core = vs.core
    signal = signal_of(clip.get_frame(0).props)
    if fmt.sample_type == vs.FLOAT:  # float YUV / GRAY is full range by definition
        signal = YuvSignal(matrix=signal.matrix, range="full")
    if fmt.color_family == vs.GRAY:
        gray = core.resize.Point(clip, format=vs.GRAYS, range_in_s=signal.range)
        rgb = core.std.ShufflePlanes([gray] * 3, planes=[0, 0, 0], colorfamily=vs.RGB)
    else:
        rgb = core.resize.Bicubic(clip, format=vs.RGBS, matrix_in_s=signal.matrix,
                                  range_in_s=signal.range)

    def restore(upscaled: vs.VideoNode) -> vs.VideoNode:
        return core.resize.Bicubic(upscaled, format=fmt.id, matrix_s=signal.matrix,
                                   range_s=signal.range)

    return rgb, restore
