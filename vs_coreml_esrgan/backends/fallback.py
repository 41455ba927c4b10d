"""The order in which backend 'auto' tries backends, decided here and nowhere else.

Off macOS there is one choice: torch for a checkpoint, the executor ('mil') for a
``.mlpackage``. On macOS the user must get correct frames whatever Core ML does on their
Mac, so 'auto' is a chain, each step taken only when the one before cannot run the model
correctly: Core ML on a compute unit that passed the parity gate -> PyTorch on the GPU
(MPS, fp16, checked by the same gate in a child process) -> PyTorch on the CPU (the
reference itself). An architecture that does not convert to Core ML (DAT, SwinIR, HAT, ...)
fails the first step at conversion and so goes straight to torch. A ``.mlpackage`` has no
checkpoint for torch: Core ML -> the executor. An explicitly named backend is never
replaced by another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from ..network_spec import ModelError
from . import BackendError

T = TypeVar("T")  # no PEP 695 syntax: tools that read the package run on 3.11 too

# What makes a step give way to the next: the backend cannot run this model here. Any
# other error (a bad argument) would fail every step alike and is raised at once.
STEP_DOWN_ON = (BackendError, ModelError)


@dataclass(frozen=True)
class Route:
    """One step: a backend ('coreml', 'torch', 'mil') and, for torch, its device."""

    backend: str
    device: str | None = None

    def describe(self) -> str:
        if self.backend == "torch" and self.device == "mps":
            return "torch on the GPU (MPS, fp16)"
        if self.backend == "torch" and self.device == "cpu":
            return "torch on the CPU"
        return {"coreml": "Core ML", "mil": "the ML Program executor (CPU)"}.get(
            self.backend, self.backend)


def routes(backend: str, *, is_package: bool, on_mac: bool) -> tuple[Route, ...]:
    """The steps for ``backend`` ('auto' or a named one) in the order they are tried."""
    if backend != "auto":
        return (Route(backend),)
    if not on_mac:
        return (Route("mil"),) if is_package else (Route("torch"),)
    if is_package:
        return (Route("coreml"), Route("mil"))
    return (Route("coreml"), Route("torch", "mps"), Route("torch", "cpu"))


def first_that_runs(order: tuple[Route, ...], attempt: Callable[[Route], T],
                       notify: Callable[[str], None]) -> T:
    """``attempt(route)`` for each route until one succeeds; each step down is one line
    through ``notify`` saying what failed, why, and what runs instead. The last route's
    error is raised when every route failed."""
    for index, route in enumerate(order):
        try:
            return attempt(route)
        except STEP_DOWN_ON as exc:
            if index + 1 == len(order):
                raise
            notify(f"{route.describe()} cannot run this model correctly here ({exc}); "
                   f"running {order[index + 1].describe()} instead")
    raise BackendError("no backend to try")  # not reached: order is never empty
