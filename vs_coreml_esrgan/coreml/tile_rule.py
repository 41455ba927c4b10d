"""Tile sizes for Core ML packages converted on the fly (``tile=None``).

The rule: sides are multiples of 16 (the Neural Engine and the GPU work in blocks of at
least that; odd sizes pad internally), multiples of 64 where that computes at most 5 % more
than the best multiple of 16, else multiples of 32 on the same condition (a float16 row of
32 elements is 64 bytes: IOSurface-backed buffers pad rows to that, Apple forum 712709, and
64-byte rows are reported to suit the Neural Engine), and no tile whose largest
intermediate tensor exceeds 256 MiB in float16. The last bound is what keeps RRDBNet
(x4plus) off the sizes the Neural Engine compiler is reported to reject (coremltools#2247,
executorch#8439): at a 512 tile its last convolutions hold 64 x 2048 x 2048 values, 512
MiB; the bound gives 352. The compact network's widest tensor is 64 channels at the input
size, so it keeps the engine's usual 512. The widest tensor is measured by running the
network once on a small input, so the rule holds for any architecture. Whether a size runs
on the Neural Engine is still measured on the user's Mac (compute units 'auto'), not
assumed; where the Neural Engine fails to compile a tile, ``smaller_tile`` gives the one it
is tried at once more.
"""

from __future__ import annotations

import math

from torch import nn

from .. import tiling
from ..activations import widest_values_per_pixel
from ..network_spec import NetworkSpec

MULTIPLE = 16
PREFERRED_MULTIPLE = 64
ROW_MULTIPLE = 32  # float16 elements in a 64-byte row
WASTE_ALLOWANCE = 1.05
ACTIVATION_BUDGET = 256 * 2**20  # bytes of the largest float16 tensor of one tile


def activation_bytes_per_pixel(network: nn.Module, spec: NetworkSpec) -> int:
    """float16 bytes of the network's largest intermediate tensor per input pixel."""
    return 2 * widest_values_per_pixel(network, spec)


def largest_tile_side(network: nn.Module, spec: NetworkSpec) -> int:
    """The largest square tile side within the activation budget, a multiple of 16,
    at most the engine's default maximum."""
    side = math.isqrt(ACTIVATION_BUDGET // activation_bytes_per_pixel(network, spec))
    side = min(side, tiling.DEFAULT_MAX_TILE)
    multiple = math.lcm(MULTIPLE, spec.multiple_of)
    return max(side - side % multiple, multiple)


def coreml_tile_size(width: int, height: int, overlap: int, network: nn.Module,
                     spec: NetworkSpec) -> tuple[int, int]:
    """(width, height) of the tile to convert for a ``width`` x ``height`` clip, within
    the model's own size requirements (multiple, minimum, square)."""
    side = largest_tile_side(network, spec)

    def planned(multiple: int) -> tuple[int, int]:
        tile = tiling.choose_tile_size(width, height, overlap, multiple_of=multiple,
                                       minimum=spec.minimum, max_tile=side)
        return (max(tile),) * 2 if spec.square else tile

    def waste(tile: tuple[int, int]) -> float:
        return tiling.plan_tiles(width, height, tile, overlap, 1).compute_waste

    best = planned(math.lcm(MULTIPLE, spec.multiple_of))
    for multiple in (PREFERRED_MULTIPLE, ROW_MULTIPLE):
        large = math.lcm(multiple, spec.multiple_of)
        if side < large:
            continue
        preferred = planned(large)
        if waste(preferred) <= WASTE_ALLOWANCE * waste(best):
            return preferred
    return best


def smaller_tile(tile: tuple[int, int], overlap: int, spec: NetworkSpec
                 ) -> tuple[int, int] | None:
    """A tile of about half the area of ``tile`` (each side divided by sqrt 2, rounded
    down to a multiple of 32, else of 16, and of the model's own multiple), each side at
    least the model's minimum and ``2 * overlap + 1``; square for square models. None when
    no smaller tile meets that."""
    floor = max(spec.minimum, 2 * overlap + 1, 1)

    def shrink(side: int) -> int:
        target = int(side / math.sqrt(2))
        for multiple in (ROW_MULTIPLE, MULTIPLE):
            step = math.lcm(multiple, spec.multiple_of)
            candidate = target - target % step
            if candidate >= floor:
                return candidate
        return side

    width, height = shrink(tile[0]), shrink(tile[1])
    if spec.square:
        width = height = min(width, height)
    if width * height >= tile[0] * tile[1]:
        return None
    return width, height
