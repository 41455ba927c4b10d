"""One compute-unit trial, run as ``python -m vs_coreml_esrgan.backends.coreml_trial REQUEST``
in a child process (see ``coreml_child``): load the compiled model on the requested units
(within its own time limit), warm up, time predictions, run the parity gate on the
photograph, read the compute plan. With PyObjC and a float16 program the same loaded model
is also timed and gated on IOSurface-backed buffers (``coreml_iosurface``); the faster of
the two that passes is the trial's answer (``buffers``), both are in ``variants``. Prints
one JSON line (a ``Trial``) and exits 0, or prints the error on stderr and exits 1; a crash
in Core ML ends only this process.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from ..coreml.package import PackageInfo
from . import BackendError, macos
from .coreml_backend import CoreMLBackend, load_backend, with_surfaces
from .coreml_child import ERROR_PREFIX
from .coreml_iosurface import surfaces_available
from .coreml_plan import PLAN_MACOS, placement
from .parity_gate import judge

T = TypeVar("T")  # no PEP 695 syntax: tools that read the package run on 3.11 too

LOAD_TIMEOUT_EXIT = 3


def measure(request: dict) -> dict:
    """Time ``request['runs']`` predictions after ``request['warmup']`` on random tiles,
    then compare the answer for the reference tiles with the reference's.
    Raises whatever loading or predicting raises, and ValueError for non-finite output."""
    info = PackageInfo(
        path=Path(request["compiled"]), input_name=request["input_name"],
        output_name=request["output_name"], input_shape=tuple(request["input_shape"]),
        output_shape=tuple(request["output_shape"]),
        input_dtype=np.dtype(request["input_dtype"]),
        output_dtype=np.dtype(request["output_dtype"]), metadata={})
    units = request["units"]
    backend = within(request.get("load_timeout", 300), f"loading on {units}", lambda: (
        load_backend(Path(request["compiled"]), units, info, request["runtime"])))
    result: dict = {"units": units, **time_and_check(backend, request)}
    if request["runtime"] == "pyobjc" and surfaces_available(info.input_dtype,
                                                             info.output_dtype):
        result = {"units": units, **faster_buffers(backend, request, result)}
    if macos.at_least(PLAN_MACOS):
        try:  # the plan informs; a setting that runs is not disqualified by it
            planned = placement(request["compiled"], units)
        except BackendError as exc:
            result["placement"] = f"not available: {exc}"
        else:
            result["placement"] = planned.describe()
            result["neural_engine_share"] = planned.share("Neural Engine")
    return result


def time_and_check(backend: CoreMLBackend, request: dict) -> dict:
    """``ms_per_tile`` (median of the timed runs after the warm-up, per batch tile), and
    with a reference ``psnr`` and ``rejected`` (why the parity gate failed it). Raises
    what predicting raises, and ValueError for non-finite output."""
    info = backend.info
    tiles = np.random.default_rng(0).random(info.input_shape).astype(info.input_dtype)
    for _ in range(request["warmup"]):
        backend(tiles)
    seconds = []
    for _ in range(request["runs"]):
        start = time.perf_counter()
        out = backend(tiles)
        seconds.append(time.perf_counter() - start)
        if not np.isfinite(out).all():
            raise ValueError(f"non-finite output on compute units {backend.compute_units}")
    result: dict = {"ms_per_tile": statistics.median(seconds) * 1000 / info.batch}
    if request.get("reference"):
        with np.load(request["reference"]) as saved:
            verdict = judge(backend(saved["tiles"]), saved["expected"],
                            request.get("precision", "fp16"))
        result["psnr"] = verdict.psnr
        if not verdict.passed:
            result["rejected"] = verdict.reason
    return result


def faster_buffers(backend: CoreMLBackend, request: dict, plain: dict) -> dict:
    """The same model timed and gated on IOSurface-backed buffers; the outcome of the
    faster of the two that passed (``plain`` when neither or only it did), with
    ``buffers`` naming it and ``variants`` describing both. A failure of the surfaces
    leaves the plain buffers in place."""
    try:
        surfaced = time_and_check(with_surfaces(backend), request)
    except Exception as exc:  # Core ML or CoreVideo refusing surfaces: plain buffers stand
        return {**plain, "buffers": "plain",
                "variants": f"plain {_outcome(plain)}; IOSurface failed: "
                            f"{type(exc).__name__}: {exc}"}
    described = f"plain {_outcome(plain)}; IOSurface {_outcome(surfaced)}"
    better = "rejected" not in surfaced and (
        "rejected" in plain or surfaced["ms_per_tile"] < plain["ms_per_tile"])
    chosen, name = (surfaced, "iosurface") if better else (plain, "plain")
    return {**chosen, "buffers": name, "variants": described}


def _outcome(result: dict) -> str:
    text = f"{result['ms_per_tile']:.1f} ms"
    return text + (f", rejected: {result['rejected']}" if "rejected" in result else "")


def within(seconds: float, what: str, action: Callable[[], T]) -> T:
    """``action()``, or this process ends (exit status 3, the reason on stderr) when it
    takes more than ``seconds``: a Neural Engine compile can hang for minutes, and the
    parent's whole-trial limit would then leave no time to say which step it was."""
    def give_up() -> None:
        print(f"{ERROR_PREFIX}TimeoutError: {what} took longer than {seconds:g} s (the "
              "Neural Engine compiler may still be running)", file=sys.stderr, flush=True)
        os._exit(LOAD_TIMEOUT_EXIT)

    timer = threading.Timer(seconds, give_up)
    timer.daemon = True
    timer.start()
    try:
        return action()
    finally:
        timer.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        result = measure(json.loads(arguments[0]))
    except Exception as exc:  # reported to the parent as this setting's failure
        print(f"{ERROR_PREFIX}{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
