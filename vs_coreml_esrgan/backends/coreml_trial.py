"""One compute-unit trial, run as ``python -m vs_coreml_esrgan.backends.coreml_trial REQUEST``
in a child process (see ``coreml_units``): load the compiled model on the requested units,
warm up, time predictions, read the compute plan. Prints one JSON line (a ``Trial``) and
exits 0, or prints the error on stderr and exits 1; a crash in Core ML ends only this
process.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..coreml.package import PackageInfo
from . import BackendError, macos
from .coreml_backend import load_backend
from .coreml_plan import PLAN_MACOS, placement
from .coreml_units import ERROR_PREFIX


def measure(request: dict) -> dict:
    """Time ``request['runs']`` predictions after ``request['warmup']`` on random tiles.
    Raises whatever loading or predicting raises, and ValueError for non-finite output
    (a setting that computes NaN must not be chosen)."""
    info = PackageInfo(
        path=Path(request["compiled"]), input_name=request["input_name"],
        output_name=request["output_name"], input_shape=tuple(request["input_shape"]),
        output_shape=tuple(request["output_shape"]),
        input_dtype=np.dtype(request["input_dtype"]),
        output_dtype=np.dtype(request["output_dtype"]), metadata={})
    units = request["units"]
    backend = load_backend(Path(request["compiled"]), units, info, request["runtime"])
    tiles = np.random.default_rng(0).random(info.input_shape).astype(info.input_dtype)
    for _ in range(request["warmup"]):
        backend(tiles)
    seconds = []
    for _ in range(request["runs"]):
        start = time.perf_counter()
        out = backend(tiles)
        seconds.append(time.perf_counter() - start)
        if not np.isfinite(out).all():
            raise ValueError(f"non-finite output on compute units {units}")
    result = {"units": units,
              "ms_per_tile": statistics.median(seconds) * 1000 / info.batch}
    if macos.at_least(PLAN_MACOS):
        try:  # the plan informs; a setting that runs is not disqualified by it
            planned = placement(request["compiled"], units)
        except BackendError as exc:
            result["placement"] = f"not available: {exc}"
        else:
            result["placement"] = planned.describe()
            result["neural_engine_share"] = planned.share("Neural Engine")
    return result


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
