"""Backend "coreml": Core ML itself, macOS only.

The package is compiled once into a ``.mlmodelc`` kept in the user cache, keyed by the
package's content hash, and loaded with ``CompiledMLModel`` (loading an ``.mlpackage``
would recompile it on every start). Inputs are fed in exactly the dtype and shape the
model's description declares.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..cache import atomic_directory, cache_dir
from ..coreml.package import PackageInfo, import_coremltools, package_digest, read_package
from . import BackendError

COMPUTE_UNITS = {"ane": "CPU_AND_NE", "gpu": "CPU_AND_GPU", "cpu": "CPU_ONLY", "all": "ALL"}


@dataclass(frozen=True, kw_only=True)
class CoreMLBackend:
    """A compiled model on the chosen compute units. ``MLModel.predict`` holds the GIL for
    the whole call, so the lock costs no parallelism and keeps one prediction in flight."""

    model: Any  # coremltools.models.CompiledMLModel
    info: PackageInfo
    compute_units: str
    name: str = "coreml"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def scale(self) -> int:
        return self.info.scale

    @property
    def input_dtype(self) -> np.dtype:
        return self.info.input_dtype

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        if tiles.shape != self.info.input_shape:
            raise ValueError(f"expected tiles of shape {self.info.input_shape}, got "
                             f"{tiles.shape}")
        feed = np.ascontiguousarray(tiles, dtype=self.info.input_dtype)
        with self._lock:
            result = self.model.predict({self.info.input_name: feed})
        return np.asarray(result[self.info.output_name])


def default_compute_units(info: PackageInfo) -> str:
    """'ane' (CPU and Neural Engine) for float16 programs, 'all' for float32 ones (the
    Neural Engine runs only float16)."""
    return "ane" if info.input_dtype == np.float16 else "all"


def compiled_model(package: str | os.PathLike[str]) -> Path:
    """The package compiled to ``.mlmodelc`` in the cache, compiling it on first use."""
    ct = import_coremltools()
    digest = package_digest(package)
    target = cache_dir() / "compiled" / f"{digest[:32]}.mlmodelc"
    if not target.is_dir():
        with atomic_directory(target) as temporary:
            ct.models.utils.compile_model(str(package), str(temporary))
    return target


def create_coreml_backend(package: str | os.PathLike[str], *,
                          compute_units: str | None = None) -> CoreMLBackend:
    """Load a package with Core ML. Raises BackendError off macOS or for unknown compute
    units, ModelError for a package that is not a fixed-shape tensor ML Program."""
    if sys.platform != "darwin":
        raise BackendError("backend 'coreml' needs macOS (Core ML predicts only there); use "
                           "backend='mil' to run a .mlpackage elsewhere, or 'torch'")
    info = read_package(package)
    units = compute_units or default_compute_units(info)
    if units not in COMPUTE_UNITS:
        raise BackendError(f"compute_units must be one of {', '.join(COMPUTE_UNITS)}, got "
                           f"{units!r}")
    ct = import_coremltools()
    model = ct.models.CompiledMLModel(str(compiled_model(package)),
                                      compute_units=getattr(ct.ComputeUnit,
                                                            COMPUTE_UNITS[units]))
    return CoreMLBackend(model=model, info=info, compute_units=units)


def operation_devices(package: str | os.PathLike[str], compute_units: str = "ane"
                      ) -> list[tuple[str, str]]:
    """(operation type, preferred device) for every non-const operation of ``main``, from
    Core ML's compute plan (macOS 14.4+)."""
    if sys.platform != "darwin":
        raise BackendError("device placement comes from Core ML's compute plan: needs macOS")
    ct = import_coremltools()
    from coremltools.models.compute_plan import MLComputePlan

    plan = MLComputePlan.load_from_path(
        path=str(compiled_model(package)),
        compute_units=getattr(ct.ComputeUnit, COMPUTE_UNITS[compute_units]))
    program = plan.model_structure.program
    if program is None:
        raise BackendError(f"{package}: not an ML Program")
    placements = []
    for operation in program.functions["main"].block.operations:
        if operation.operator_name == "const":
            continue
        usage = plan.get_compute_device_usage_for_mlprogram_operation(operation)
        device = type(usage.preferred_compute_device).__name__ if usage else "unknown"
        placements.append((operation.operator_name, device.removeprefix("ML")
                           .removesuffix("ComputeDevice")))
    return placements
