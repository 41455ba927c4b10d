"""Backend "mil": a converted ``.mlpackage`` run by the portable executor (any machine)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..coreml.mil import MilProgram


@dataclass(frozen=True, kw_only=True)
class MilBackend:
    """Runs exactly what Core ML would run, with PyTorch on the CPU. Calls are serialised
    (each already uses every core) on one thread the backend owns, whichever thread makes
    them: each thread entering PyTorch would get an OpenMP team of its own."""

    program: MilProgram
    name: str = "mil"
    _worker: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="mil"),
        repr=False, compare=False)

    @property
    def scale(self) -> int:
        return self.program.info.scale

    @property
    def input_dtype(self) -> np.dtype:
        return self.program.info.input_dtype

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        return self._worker.submit(self.program, tiles).result()


def create_mil_backend(package: str | os.PathLike[str]) -> MilBackend:
    """Load a package for the executor. Raises ModelError for one it cannot run."""
    return MilBackend(program=MilProgram.load(package))
