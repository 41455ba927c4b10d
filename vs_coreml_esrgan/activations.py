"""How large a network's tensors get per input pixel, measured rather than derived from
the architecture: one run at 32 x 32 with every torch function's result recorded (module
outputs and functional ops alike: interpolate, pixel_shuffle, cat, add). A convolutional
network's tensors grow with the input's area, so the ratio holds at any tile size."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .network_spec import NetworkSpec

_SIDE_MULTIPLE = 16


class _LargestResult(TorchFunctionMode):
    """Records the element count of the largest tensor any torch function returns."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for value in result if isinstance(result, tuple | list) else (result,):
            if isinstance(value, torch.Tensor):
                self.largest = max(self.largest, value.numel())
        return result


def widest_values_per_pixel(network: nn.Module, spec: NetworkSpec) -> int:
    """Elements of the network's largest intermediate tensor per input pixel (rounded up)."""
    side = math.lcm(_SIDE_MULTIPLE, spec.multiple_of)
    while side < max(32, spec.minimum):
        side *= 2
    dtype = next(network.parameters()).dtype
    with torch.inference_mode(), _LargestResult() as recorder:
        network(torch.zeros(1, spec.num_in_ch, side, side, dtype=dtype))
    return -(-recorder.largest // (side * side))
