"""Backend "coreml": Core ML itself, macOS only.

The package is compiled once into a ``.mlmodelc`` kept in the user cache, keyed by the
package's content hash, and loaded from there (loading an ``.mlpackage`` would recompile
it on every start). Two runtimes call Core ML: PyObjC (``pyobjc-framework-CoreML``: no
copies, the GIL released during predictions) where installed, else coremltools
(``CompiledMLModel.predict``). Inputs are fed in exactly the dtype and shape the model's
description declares. Compute units 'auto' measure once per model and machine which of
the Neural Engine, the GPU or both is fastest (``coreml_units``).

coremltools calls checked against its 9.0 source: ``compile_model(path, dest)`` wants a
string path and a destination ending in ``.mlmodelc`` (models/utils.py); the native proxy
raises RuntimeError (pybind11's translation of std::runtime_error in
coremlpython/CoreMLPython.mm) for a model it cannot load or predict with and for
CPU_AND_NE before macOS 13; ``compile_model`` and ``CompiledMLModel`` raise a bare
Exception when the native library is missing.
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
from . import BackendError, macos
from .coreml_plan import COMPUTE_UNITS, neural_engine_warning
from .coreml_pyobjc import load_pyobjc_predictor, pyobjc_available

UNIT_CHOICES = ("auto", *COMPUTE_UNITS)
RUNTIMES = ("auto", "pyobjc", "coremltools")
# Our packages are ML Programs for macOS 13 (coreml/convert.py), which Core ML before 13
# cannot load; CPU_AND_NE also first exists there.
MINIMUM_MACOS = (13, 0)

Notify = Callable[[str], None]


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
        feed = np.ascontiguousarray(tiles, dtype=self.info.input_dtype)
        with self._lock:
            return np.asarray(self.predict(feed))


def compiled_model(package: str | os.PathLike[str]) -> Path:
    """The package compiled to ``.mlmodelc`` in the cache, compiling it on first use.
    Raises BackendError when Core ML cannot compile it."""
    ct = import_coremltools()
    digest = package_digest(package)
    target = cache_dir() / "compiled" / f"{digest[:32]}.mlmodelc"
    if not target.is_dir():
        try:
            with atomic_directory(target) as temporary:
                ct.models.utils.compile_model(str(package), str(temporary))
        except Exception as exc:  # RuntimeError from Core ML, Exception without it
            raise BackendError(f"Core ML could not compile {package}: {exc}") from None
    return target


def create_coreml_backend(package: str | os.PathLike[str], *,
                          compute_units: str | None = None, runtime: str = "auto",
                          notify: Notify | None = None) -> CoreMLBackend:
    """Load a package with Core ML.

    ``compute_units``: 'auto' (None: measured once per model and machine, see
    ``coreml_units``), 'ane', 'gpu', 'cpu' or 'all'. ``runtime``: 'pyobjc',
    'coremltools', or 'auto' (PyObjC where its Core ML bindings are installed, else
    coremltools). ``notify`` receives the one-line report of an 'auto' choice and the
    warning when 'ane' was asked for and Core ML places nothing on the Neural Engine.
    Raises BackendError off macOS, before macOS 13, for unknown compute units or runtime,
    a runtime that is missing, or Core ML failing to compile, load or run the model;
    ModelError for a package that is not a fixed-shape tensor ML Program.
    """
    if runtime not in RUNTIMES:
        raise BackendError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    units = compute_units or "auto"
    if units not in UNIT_CHOICES:
        raise BackendError(f"compute_units must be one of {', '.join(UNIT_CHOICES)}, got "
                           f"{units!r}")
    if sys.platform != "darwin":
        raise BackendError("backend 'coreml' needs macOS (Core ML predicts only there); use "
                           "backend='mil' to run a .mlpackage elsewhere, or 'torch'")
    macos.require(MINIMUM_MACOS, "Core ML with this project's packages (ML Programs)")
    info = read_package(package)
    compiled = compiled_model(package)
    say = notify or _warn
    chosen_runtime = runtime
    if runtime == "auto":
        chosen_runtime = "pyobjc" if pyobjc_available() else "coremltools"
    if units == "auto":
        from .coreml_units import choose_compute_units

        try:
            units = choose_compute_units(compiled, info, chosen_runtime, notify=say)
        except BackendError as exc:
            if runtime != "auto" or chosen_runtime != "pyobjc":
                raise
            say(f"Core ML through PyObjC ran on no compute units ({exc}); measuring "
                "through coremltools")
            chosen_runtime = "coremltools"
            units = choose_compute_units(compiled, info, chosen_runtime, notify=say)
    elif units == "ane":
        warning = neural_engine_warning(compiled)
        if warning:
            say(warning)
    if runtime == "auto" and chosen_runtime == "pyobjc":
        try:
            return load_backend(compiled, units, info, "pyobjc", probe=True)
        except Exception as exc:  # whatever broke the optional runtime: say so, fall back
            say(f"Core ML through PyObjC failed ({exc}); using coremltools")
            chosen_runtime = "coremltools"
    return load_backend(compiled, units, info, chosen_runtime)


def load_backend(compiled: Path, units: str, info: PackageInfo, runtime: str, *,
                 probe: bool = False) -> CoreMLBackend:
    """The backend on one runtime; ``probe`` runs one prediction first (a warm-up the
    first tile would pay anyway) so that a runtime failing on this model fails here."""
    if runtime == "pyobjc":
        predict = load_pyobjc_predictor(
            compiled, units, input_name=info.input_name, output_name=info.output_name,
            output_shape=info.output_shape, output_dtype=info.output_dtype).predict
    else:
        predict = coremltools_predictor(compiled, units, info)
    backend = CoreMLBackend(predict=predict, info=info, compute_units=units,
                            runtime=runtime)
    if probe:
        backend(np.zeros(info.input_shape, info.input_dtype))
    return backend


def coremltools_predictor(compiled: Path, units: str, info: PackageInfo
                          ) -> Callable[[np.ndarray], np.ndarray]:
    """coremltools' ``CompiledMLModel.predict`` (holds the GIL, copies float16 through
    float32) as an array-to-array function; its RuntimeErrors become BackendErrors."""
    ct = import_coremltools()
    try:
        model = ct.models.CompiledMLModel(str(compiled), compute_units=getattr(
            ct.ComputeUnit, COMPUTE_UNITS[units]))
    except Exception as exc:  # RuntimeError from Core ML, Exception without it
        raise BackendError(f"Core ML could not load {compiled} on {units}: {exc}") from None

    def predict(feed: np.ndarray) -> np.ndarray:
        try:
            return model.predict({info.input_name: feed})[info.output_name]
        except RuntimeError as exc:
            raise BackendError(f"Core ML prediction failed: {exc}") from None

    return predict


def _warn(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=3)
