"""How the doubles lie, chosen per MLComputeUnits value (CPUOnly 0, CPUAndGPU 1, All 2,
CPUAndNeuralEngine 3) through comma-separated environment variables; shared by the
PyObjC and coremltools doubles. Each lie is one Core ML was reported to tell:

- FAKE_COREML_WRONG_UNITS: finite but wrong predictions (scaled and shifted).
  ultralytics PR #24944: CPU_AND_NE "silently corrupts" outputs "without a crash or
  warning" (M5, macOS 26.5.1, coremltools 9.0); coremltools #2281: ConvTranspose on
  CPU_ONLY vs ALL "completely different".
- FAKE_COREML_ZERO_UNITS: all zeros, which pass an isfinite check (coremltools #1380,
  Neural Engine "Program Inference overflow").
- FAKE_COREML_KILL_PREDICT_UNITS: the load succeeds and writes `ANECCompile() FAILED` to
  stderr, then the first prediction sends SIGKILL to its own process (coremltools #2758,
  exit status 137).
- FAKE_COREML_ANE_MAX_PIXELS: a Neural Engine load (CPUAndNeuralEngine) of a program whose
  input tile has more pixels than this fails to compile (`ANECCompile() FAILED`): the
  Neural Engine compiler is reported to reject large shapes (coremltools #2247,
  executorch #8439) while smaller tiles of the same network compile.
"""

from __future__ import annotations

import os
import signal

import numpy as np

COREMLTOOLS_UNITS = {"CPU_ONLY": 0, "CPU_AND_GPU": 1, "ALL": 2, "CPU_AND_NE": 3}


def listed(variable: str, units: int) -> bool:
    return str(units) in os.environ.get(variable, "").split(",")


def delay_s(variable: str, units: int) -> float:
    """Seconds from ``variable`` ('units=ms,...', e.g. FAKE_COREML_DELAY_MS='3=300')."""
    delays = dict(item.split("=") for item in os.environ.get(variable, "").split(",")
                  if item)
    return float(delays.get(str(units), 0)) / 1000


def on_load(units: int) -> bool:
    """What a load does: abort the process (FAKE_COREML_ABORT_UNITS, as an MPSGraph or
    compiler assertion would), write to stderr; True when the first prediction must kill
    the process."""
    if listed("FAKE_COREML_ABORT_UNITS", units):
        os.abort()
    if listed("FAKE_COREML_KILL_PREDICT_UNITS", units):
        os.write(2, b"E5RT: ANECCompile() FAILED: MILCompilerForANE error\n")
        return True
    return False


def compile_rejected(units: int, input_shape: tuple[int, ...]) -> bool:
    """Whether the Neural Engine compiler rejects this tile (FAKE_COREML_ANE_MAX_PIXELS);
    writes the compiler's complaint to stderr when it does."""
    limit = os.environ.get("FAKE_COREML_ANE_MAX_PIXELS")
    if units != 3 or not limit or input_shape[-1] * input_shape[-2] <= int(limit):
        return False
    os.write(2, b"E5RT: ANECCompile() FAILED: MILCompilerForANE: shape too large\n")
    return True


def on_predict(kill: bool) -> None:
    if kill:
        os.kill(os.getpid(), signal.SIGKILL)


def answer(units: int, result: np.ndarray) -> np.ndarray:
    """The prediction as the lying unit gives it."""
    if listed("FAKE_COREML_ZERO_UNITS", units):
        return np.zeros_like(result)
    if listed("FAKE_COREML_WRONG_UNITS", units):
        return (result.astype(np.float32) * 0.9 + 0.05).astype(result.dtype)
    return result
