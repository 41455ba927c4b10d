"""Tile sizes for Core ML packages converted on the fly (``tile=None``).

The rule: sides are multiples of 16 (the Neural Engine and the GPU work in blocks of at
least that; odd sizes pad internally), multiples of 64 where that computes at most 5 %
more than the best multiple of 16, and no tile whose largest intermediate tensor exceeds
256 MiB in float16. The last bound is what keeps RRDBNet (x4plus) off the sizes the
Neural Engine compiler is reported to reject (coremltools#2247, executorch#8439): at a
512 tile its last convolutions hold 64 x 2048 x 2048 values, 512 MiB; the bound gives
352. The compact network's widest tensor is 64 channels at the input size, so it keeps the
engine's usual 512. Whether a size runs on the Neural Engine is still measured on the
user's Mac (compute units 'auto'), not assumed.
"""

from __future__ import annotations

import math

from .. import tiling
from ..network_spec import NetworkSpec

MULTIPLE = 16
PREFERRED_MULTIPLE = 64
WASTE_ALLOWANCE = 1.05
ACTIVATION_BUDGET = 256 * 2**20  # bytes of the largest float16 tensor of one tile


def activation_bytes_per_pixel(spec: NetworkSpec) -> int:
    """float16 bytes of the network's widest tensor per input pixel: channels times the
    area factor of the resolution it lives at."""
    if spec.arch == "srvgg":
        body_scale = spec.bicubic_from or spec.scale
        channels = max(spec.num_feat, spec.num_out_ch * body_scale ** 2)
        return 2 * max(channels, spec.num_out_ch * spec.scale ** 2)
    # RRDBNet (and, conservatively, anything else): num_feat channels at output size.
    return 2 * spec.num_feat * spec.scale ** 2


def largest_tile_side(spec: NetworkSpec) -> int:
    """The largest square tile side within the activation budget, a multiple of 16,
    at most the engine's default maximum."""
    side = math.isqrt(ACTIVATION_BUDGET // activation_bytes_per_pixel(spec))
    side = min(side, tiling.DEFAULT_MAX_TILE)
    multiple = math.lcm(MULTIPLE, spec.multiple_of)
    return max(side - side % multiple, multiple)


def coreml_tile_size(width: int, height: int, overlap: int, spec: NetworkSpec
                     ) -> tuple[int, int]:
    """(width, height) of the tile to convert for a ``width`` x ``height`` clip."""
    side = largest_tile_side(spec)
    small = math.lcm(MULTIPLE, spec.multiple_of)
    best = tiling.choose_tile_size(width, height, overlap, multiple_of=small, max_tile=side)
    large = math.lcm(PREFERRED_MULTIPLE, spec.multiple_of)
    if side < large:
        return best
    preferred = tiling.choose_tile_size(width, height, overlap, multiple_of=large,
                                        max_tile=side)
    def waste(tile: tuple[int, int]) -> float:
        return tiling.plan_tiles(width, height, tile, overlap, 1).compute_waste

    return preferred if waste(preferred) <= WASTE_ALLOWANCE * waste(best) else best
