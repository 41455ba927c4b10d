"""Inference backends: upscaled tiles from tiles, nothing else (no VapourSynth here)."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Backend(Protocol):
    """Runs a network on a batch of tiles.

    ``__call__`` takes a ``(N, C, H, W)`` array of ``input_dtype`` with values in [0, 1]
    and returns ``(N, C, H * scale, W * scale)`` as float32 or float16, unclamped. It must
    be safe to call from several threads at once.
    """

    name: str
    scale: int
    input_dtype: np.dtype

    def __call__(self, tiles: np.ndarray) -> np.ndarray: ...


class BackendError(ValueError):
    """A backend that cannot be created as asked (device, precision, missing runtime)."""


__all__ = ["Backend", "BackendError"]
