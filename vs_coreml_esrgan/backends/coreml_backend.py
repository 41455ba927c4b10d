"""Backend "coreml": Core ML itself, macOS only.

The package is compiled once into a ``.mlmodelc`` kept in the user cache, keyed by the
package's content hash, and loaded from there (loading an ``.mlpackage`` would recompile
it on every start). Two runtimes call Core ML: PyObjC (``pyobjc-framework-CoreML``: no
copies, the GIL released during predictions) where installed, else coremltools
(``CompiledMLModel.predict``). Inputs are fed in exactly the dtype and shape the model's
description declares.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..cache import atomic_directory, cache_dir
from ..coreml.package import PackageInfo, import_coremltools, package_digest, read_package
from . import BackendError
from .coreml_pyobjc import load_pyobjc_predictor, pyobjc_available

COMPUTE_UNITS = {"ane": "CPU_AND_NE", "gpu": "CPU_AND_GPU", "cpu": "CPU_ONLY", "all": "ALL"}
RUNTIMES = ("auto", "pyobjc", "coremltools")


@dataclass(frozen=True, kw_only=True)
class CoreMLBackend:
    """A compiled model on the chosen compute units. One prediction is in flight at a
    time (the lock); with the PyObjC runtime the GIL is free meanwhile, so other threads
    cut and stitch tiles while Core ML runs."""

    predict: Callable[[np.ndarray], np.ndarray]  # input array -> output array
    info: PackageInfo
    compute_units: str
    runtime: str  # 'pyobjc' or 'coremltools'
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
        # Contiguous and writeable: PyObjC hands Core ML this very buffer.
        feed = np.require(tiles, dtype=self.info.input_dtype, requirements=["C", "W"])
        with self._lock:
            return np.asarray(self.predict(feed))


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
                          compute_units: str | None = None,
                          runtime: str = "auto") -> CoreMLBackend:
    """Load a package with Core ML.

    ``runtime``: 'pyobjc', 'coremltools', or 'auto' (PyObjC where its Core ML bindings are
    installed, else coremltools). Raises BackendError off macOS, for unknown compute units
    or runtime, or a runtime that is missing; ModelError for a package that is not a
    fixed-shape tensor ML Program.
    """
    if runtime not in RUNTIMES:
        raise BackendError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if sys.platform != "darwin":
        raise BackendError("backend 'coreml' needs macOS (Core ML predicts only there); use "
                           "backend='mil' to run a .mlpackage elsewhere, or 'torch'")
    info = read_package(package)
    units = compute_units or default_compute_units(info)
    if units not in COMPUTE_UNITS:
        raise BackendError(f"compute_units must be one of {', '.join(COMPUTE_UNITS)}, got "
                           f"{units!r}")
    compiled = compiled_model(package)
    if runtime == "auto" and pyobjc_available():
        try:
            return _backend(compiled, units, info, "pyobjc", probe=True)
        except Exception as exc:  # whatever broke the optional runtime: say so, fall back
            warnings.warn(f"Core ML through PyObjC failed ({exc}); using coremltools",
                          RuntimeWarning, stacklevel=2)
    return _backend(compiled, units, info,
                    "coremltools" if runtime == "auto" else runtime)


def _backend(compiled: Path, units: str, info: PackageInfo, runtime: str, *,
             probe: bool = False) -> CoreMLBackend:
    """The backend on one runtime; ``probe`` runs one prediction first (a warm-up the
    first tile would pay anyway) so that a runtime failing on this model fails here."""
    if runtime == "pyobjc":
        predict = load_pyobjc_predictor(
            compiled, units, input_name=info.input_name, output_name=info.output_name,
            output_shape=info.output_shape, output_dtype=info.output_dtype).predict
    else:
        predict = _coremltools_predictor(compiled, units, info)
    backend = CoreMLBackend(predict=predict, info=info, compute_units=units,
                            runtime=runtime)
    if probe:
        backend(np.zeros(info.input_shape, info.input_dtype))
    return backend


def _coremltools_predictor(compiled: Path, units: str, info: PackageInfo
                           ) -> Callable[[np.ndarray], np.ndarray]:
    """coremltools' ``CompiledMLModel.predict`` (holds the GIL, copies float16 through
    float32) as an array-to-array function."""
    ct = import_coremltools()
    model = ct.models.CompiledMLModel(str(compiled), compute_units=getattr(
        ct.ComputeUnit, COMPUTE_UNITS[units]))

    def predict(feed: np.ndarray) -> np.ndarray:
        return model.predict({info.input_name: feed})[info.output_name]

    return predict


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
