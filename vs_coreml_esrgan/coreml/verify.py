"""Does a converted program compute what its checkpoint computes?"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..network_spec import ModelError
from .package import PackageInfo

FP32_MAX_ABS = 1e-4
FP16_MIN_PSNR = 45.0


@dataclass(frozen=True)
class Comparison:
    max_abs_error: float  # over the finite outputs
    psnr: float  # dB, on outputs clamped to [0, 1] as the filter writes them
    tiles: int
    precision: str
    non_finite: int = 0  # NaN or infinite values the program computed

    @property
    def passed(self) -> bool:
        if self.non_finite:
            return False
        if self.precision == "fp32":
            return self.max_abs_error <= FP32_MAX_ABS
        return self.psnr >= FP16_MIN_PSNR

    @property
    def tolerance(self) -> str:
        return (f"max abs error <= {FP32_MAX_ABS:g}" if self.precision == "fp32"
                else f"PSNR >= {FP16_MIN_PSNR:g} dB")


def random_tiles(info: PackageInfo, seed: int) -> np.ndarray:
    """Tiles of the package's input shape: smoothed uniform noise in [0, 1], so the
    network sees edges and flat areas rather than white noise alone."""
    rng = np.random.default_rng(seed)
    n, c, h, w = info.input_shape
    noise = rng.random((n, c, h + 2, w + 2), dtype=np.float32)
    smooth = (2 * noise[:, :, 1:-1, 1:-1] + noise[:, :, :-2, 1:-1] + noise[:, :, 2:, 1:-1]
              + noise[:, :, 1:-1, :-2] + noise[:, :, 1:-1, 2:]) / 6
    return smooth.astype(info.input_dtype)


def compare(run: Callable[[np.ndarray], np.ndarray], network: nn.Module, info: PackageInfo,
            *, rounds: int = 2, seed: int = 0) -> Comparison:
    """Run ``rounds`` batches through the program and through the float32 network.

    Raises ModelError when the two disagree in output shape (another scale or channel
    count: not the same model). NaN or infinite outputs of the program are counted, never
    hidden in the error figures (a NaN compares as no error at all)."""
    worst = 0.0
    squared = []
    non_finite = 0
    for k in range(rounds):
        tiles = random_tiles(info, seed + k)
        ours = np.asarray(run(tiles), dtype=np.float32)
        with torch.inference_mode():
            reference = network.float()(torch.from_numpy(tiles.astype(np.float32))).numpy()
        if ours.shape != reference.shape:
            raise ModelError(f"{info.path.name} computes {_describe(ours.shape)} but the "
                             f"checkpoint {_describe(reference.shape)} from the same tiles: "
                             "they are different models")
        if not np.isfinite(reference).all():
            raise ModelError("the checkpoint itself computes NaN or infinite values on "
                             "random tiles in float32: its weights are far too large")
        finite = np.isfinite(ours)
        non_finite += int(ours.size - np.count_nonzero(finite))
        ours = np.where(finite, ours, 0.0)
        worst = max(worst, float(np.abs(ours - reference).max()))
        squared.append(float(np.mean((np.clip(ours, 0, 1) - np.clip(reference, 0, 1)) ** 2)))
    mse = float(np.mean(squared))
    psnr = float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))
    return Comparison(max_abs_error=worst, psnr=psnr, tiles=rounds * info.batch,
                      precision=info.precision, non_finite=non_finite)


def _describe(shape: tuple[int, ...]) -> str:
    return f"{shape[1]} channels of {shape[3]}x{shape[2]}"
