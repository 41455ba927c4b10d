"""The parity gate: does a compute setting compute what the reference computes, on real
pixels, before anything is upscaled with it?

Why: Core ML has been reported to answer wrong but finite values on some compute units
(ultralytics PR #24944: CPU_AND_NE "silently corrupts" outputs without an error;
coremltools #2281: ConvTranspose differs between CPU_ONLY and ALL; coremltools #1380: the
Neural Engine overflowing to all zeros). A NaN check lets all of those through, so every
candidate runs one tile of a natural photograph (shipped in ``vs_coreml_esrgan/data``)
and its output is compared with the reference's: the portable ML Program executor for a
Core ML program, PyTorch float32 on the CPU for torch on another device.

Needs numpy only; the reference is computed by the caller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import numpy as np

# PSNR of the outputs clamped to [0, 1] (as the filter writes them). float16 programs
# differ from the reference by rounding alone (the conversion check in coreml/verify.py
# uses the same 45 dB); float32 ones must agree much more closely.
MIN_PSNR = {"fp16": 45.0, "fp32": 60.0}
# An answer whose spread is this small while the reference's is not is "near-constant"
# (coremltools #1380's zeros, a black or grey frame).
NEAR_CONSTANT = 1e-3
# What the Neural Engine compiler writes to stderr when it rejects a program
# (coremltools #2758: `ANECCompile() FAILED` at load, before the process is killed).
COMPILER_MARKERS = ("ANECCompile() FAILED", "MILCompilerForANE")


@dataclass(frozen=True)
class Parity:
    """One comparison: ``psnr`` in dB (inf when equal), ``passed``, and ``reason`` saying
    what was wrong when it did not pass."""

    psnr: float
    passed: bool
    reason: str = ""


def photo() -> np.ndarray:
    """The shipped natural-image crop as float32 ``(3, H, W)`` in [0, 1]."""
    with resources.files("vs_coreml_esrgan").joinpath("data/photo.npy").open("rb") as f:
        return np.load(f).astype(np.float32) / 255


def gate_tiles(shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """Tiles of ``shape`` ``(N, C, H, W)`` cut from the photograph, mirrored where the tile
    is larger than it; tile k of a batch starts k * 17 pixels further in, so a batch's
    tiles differ. One channel takes the photograph's mean; more than three repeat it."""
    n, c, h, w = shape
    image = photo()
    if c == 1:
        image = image.mean(axis=0, keepdims=True)
    elif c != 3:
        image = np.resize(image, (c, *image.shape[1:]))
    tiles = []
    for k in range(n):
        shifted = np.roll(image, (-17 * k, -17 * k), axis=(1, 2))
        reps = (1, -(-h // shifted.shape[1]) + 1, -(-w // shifted.shape[2]) + 1)
        mirrored = np.concatenate([shifted, shifted[:, ::-1]], axis=1)
        mirrored = np.concatenate([mirrored, mirrored[:, :, ::-1]], axis=2)
        tiles.append(np.tile(mirrored, reps)[:, :h, :w])
    return np.stack(tiles).astype(dtype)


def judge(candidate: np.ndarray, reference: np.ndarray, precision: str) -> Parity:
    """Compare ``candidate`` with ``reference`` (same shape) after clamping both to [0, 1].
    Passes when the PSNR reaches ``MIN_PSNR[precision]``, every value is finite and the
    answer is not near-constant where the reference is not."""
    ours = np.asarray(candidate, dtype=np.float32)
    wanted = np.asarray(reference, dtype=np.float32)
    if ours.shape != wanted.shape:
        return Parity(0.0, False, f"output of shape {ours.shape}, expected {wanted.shape}")
    needed = MIN_PSNR.get(precision, MIN_PSNR["fp16"])
    bad = int(ours.size - np.count_nonzero(np.isfinite(ours)))
    if bad:
        return Parity(0.0, False, f"{bad} NaN or infinite values")
    ours, wanted = np.clip(ours, 0, 1), np.clip(wanted, 0, 1)
    mse = float(np.mean((ours - wanted) ** 2))
    psnr = float("inf") if mse == 0 else float(10 * np.log10(1 / mse))
    if float(ours.std()) < NEAR_CONSTANT <= float(wanted.std()):
        return Parity(psnr, False, f"near-constant output (spread {float(ours.std()):.2g}, "
                                   f"reference {float(wanted.std()):.2g})")
    if psnr < needed:
        return Parity(psnr, False, f"wrong output: PSNR {psnr:.1f} dB against the reference "
                                   f"(needs >= {needed:g} dB)")
    return Parity(psnr, True)


def compiler_errors(text: str) -> tuple[str, ...]:
    """The lines of a child's stderr that carry a Neural Engine compiler error, each once,
    at most five (a compiler may repeat itself per operation)."""
    found: list[str] = []
    for line in text.splitlines():
        if any(marker in line for marker in COMPILER_MARKERS):
            line = re.sub(r"\s+", " ", line.strip())[:200]
            if line not in found:
                found.append(line)
    return tuple(found[:5])
