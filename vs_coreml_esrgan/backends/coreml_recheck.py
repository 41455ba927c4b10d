"""The parity gate once more, in this process, on the backend about to be used.

Why: a verdict is saved per model, runtime, macOS build and chip, and a saved "correct"
would otherwise be trusted for good. The same Core ML that answered right in the trial can
answer wrong later (a changed system component, a Neural Engine that overflows to zeros on
some days: coremltools #1380); one tile of the gate's photograph costs a single
prediction, so every load checks it before a frame is kept. A setting that fails here is
saved as failed, so the next choice passes it over.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import numpy as np

from .coreml_child import Trial, coremltools_version
from .coreml_records import load_trials, measuring_alone, record_path, save_trials
from .parity_gate import Parity, judge


class _Predicts(Protocol):
    def __call__(self, tiles: np.ndarray) -> np.ndarray: ...


def recheck(backend: _Predicts, reference: Path, precision: str) -> Parity:
    """``backend``'s answer for the saved gate tiles against the executor's saved answer
    (``reference``: coreml_records.reference_file). Prediction errors propagate."""
    with np.load(reference) as saved:
        tiles, expected = saved["tiles"], saved["expected"]
    return judge(backend(tiles), expected, precision)


def demote(compiled: Path, runtime: str, units: str, parity: Parity) -> Trial:
    """Save ``units`` on ``runtime`` as failed (rejected at load, with ``parity``'s
    reason), replacing a passing verdict; returns the saved trial."""
    path = record_path(compiled, runtime)
    with measuring_alone(path, lambda _message: None):
        known = load_trials(path)
        failed = replace(known.get(units) or Trial(units, ms_per_tile=0.0),
                         psnr=parity.psnr, runtime=runtime, measured_at=time.time(),
                         coremltools=coremltools_version(),
                         rejected=f"{parity.reason} (checked again when loaded)")
        save_trials(path, {**known, units: failed})
    return failed
