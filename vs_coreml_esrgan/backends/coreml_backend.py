"""Backend "coreml": Core ML itself, macOS only.

The package is compiled once into a ``.mlmodelc`` kept in the user cache, keyed by the
package's content hash, and loaded from there (loading an ``.mlpackage`` would recompile
it on every start). Two runtimes call Core ML: PyObjC (``pyobjc-framework-CoreML``: no
copies, the GIL released during predictions) where installed, else coremltools
(``CompiledMLModel.predict``). Inputs are fed in exactly the dtype and shape the model's
description declares. Every compute-unit setting is tried and checked against the
executor in a child process before it is used here (``coreml_units``). With PyObjC the
trial also times IOSurface-backed buffers (``coreml_iosurface``) and the faster of the two
that passes is used (runtime 'pyobjc-iosurface'); a Neural Engine that fails to compile
the package's tile is tried once at a smaller one where the model can be converted again.

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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..cache import atomic_directory, cache_dir
from ..coreml.package import PackageInfo, import_coremltools, package_digest, read_package
from ..network_spec import ModelError
from . import BackendError, macos
from .coreml_child import Trial, trial_in_child
from .coreml_iosurface import surface_predictor
from .coreml_plan import COMPUTE_UNITS
from .coreml_pyobjc import load_pyobjc_predictor, pyobjc_available
from .coreml_recheck import demote, recheck
from .coreml_records import load_trials, record_path, reference_file
from .coreml_units import (
    DOCTOR_HINT,
    Retile,
    Retry,
    check_units,
    choose_compute_units,
    failure,
    resolve_preference,
)
from .parity_gate import Parity

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
    runtime: str  # 'pyobjc', 'pyobjc-iosurface' or 'coremltools'
    name: str = "coreml"
    model: Any = field(default=None, repr=False, compare=False)  # PyObjC's MLModel
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


def require_macos() -> None:
    """BackendError off macOS: Core ML predicts only there."""
    if sys.platform != "darwin":
        raise BackendError("backend 'coreml' needs macOS (Core ML predicts only there); use "
                           "backend='mil' to run a .mlpackage elsewhere, or 'torch'")


def create_coreml_backend(package: str | os.PathLike[str], *,
                          compute_units: str | None = None, runtime: str = "auto",
                          prefer: str | None = None, notify: Notify | None = None,
                          retile: Retile | None = None,
                          rechecks_left: int = 4) -> CoreMLBackend:
    """Load a package with Core ML, on compute units proven on this Mac.

    ``compute_units``: 'auto' (None: the setting ``prefer`` picks among those that run
    correctly, see ``coreml_units``), 'ane', 'gpu', 'cpu' or 'all'. Either way the setting
    is first tried in a child process (a crash there ends only the child) and its answer
    for a photograph compared with the ML Program executor's (the parity gate); only a
    setting that passed is loaded here. ``runtime``: 'pyobjc', 'coremltools', or 'auto'
    (PyObjC where its Core ML bindings are installed, coremltools when PyObjC fails the
    check). ``prefer``: 'speed', 'efficiency' or 'auto' (None; see
    ``coreml_units.resolve_preference``). ``notify`` receives the one-line report of the
    choice and of what was rejected. ``retile``: the model at other tiles, for a Neural
    Engine that fails to compile this package's tile (the backend's ``info.tile`` is then
    the smaller tile it runs). The loaded backend answers the gate's photograph once more
    (coreml_recheck): a remembered setting that fails now is saved as failed, and 'auto'
    chooses again (at most ``rechecks_left`` times).
    Raises BackendError off macOS, before macOS 13, for unknown arguments, a runtime that
    is missing, Core ML failing to compile the model, and compute units that fail the
    check (naming what failed and ``vs-coreml-esrgan doctor``); ModelError for a package
    that is not a fixed-shape tensor ML Program.
    """
    if runtime not in RUNTIMES:
        raise BackendError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    units = compute_units or "auto"
    if units not in UNIT_CHOICES:
        raise BackendError(f"compute_units must be one of {', '.join(UNIT_CHOICES)}, got "
                           f"{units!r}")
    preference = resolve_preference(prefer)
    require_macos()
    macos.require(MINIMUM_MACOS, "Core ML with this project's packages (ML Programs)")
    info = read_package(package)
    compiled = compiled_model(package)
    say = notify or _warn
    reference, why = reference_file(package, compiled)
    if reference is None:
        say(f"Core ML: the parity gate cannot check this model: {why}")
    runtimes = [runtime] if runtime != "auto" else (
        ["pyobjc", "coremltools"] if pyobjc_available() else ["coremltools"])
    failed: list[Trial] = []
    for index, chosen_runtime in enumerate(runtimes):
        later = index + 1 < len(runtimes)
        retry = None if retile is None else smaller_tile_retry(retile, info, chosen_runtime,
                                                               say)
        if units == "auto":
            try:
                chosen_units = choose_compute_units(compiled, info, chosen_runtime,
                                                    notify=say, prefer=preference,
                                                    reference=reference, retry=retry)
            except BackendError as exc:
                if not later:
                    raise BackendError(f"{exc}; {DOCTOR_HINT}") from None
                say(f"Core ML through PyObjC ran correctly on no compute units ({exc}); "
                    "trying coremltools")
                continue
        else:
            trial = check_units(compiled, info, chosen_runtime, units, notify=say,
                                reference=reference, retry=retry)
            if not trial.usable:
                failed.append(trial)
                if later:
                    say(f"Core ML through PyObjC failed the check on {units} "
                        f"({trial.error or trial.rejected}); trying coremltools")
                    continue
                raise failure(units, failed)
            chosen_units = units
        try:
            backend = load_chosen(compiled, info, chosen_units, chosen_runtime, retile)
        except BackendError as exc:
            if not later:
                raise
            say(f"Core ML through PyObjC failed ({exc}); using coremltools")
            continue
        against = reference
        if against and retile and backend.info.input_shape != info.input_shape:
            smaller = retile.package(backend.info.tile)  # the tile the Neural Engine took
            against, _ = reference_file(smaller, compiled_model(smaller))
        try:
            parity = recheck(backend, against, info.precision) if against else None
        except BackendError as exc:  # a prediction that fails now: before any frame
            parity = Parity(0.0, False, str(exc))
        if parity is None or parity.passed:
            return backend
        trial = demote(compiled, chosen_runtime, chosen_units, parity)
        say(f"Core ML: compute units '{chosen_units}' ({chosen_runtime}), correct when "
            f"measured, now fail the check on the photograph ({parity.reason}); "
            "saved as failed")
        if units != "auto" and later:
            continue
        if units != "auto" or rechecks_left == 0:
            raise failure(chosen_units, [trial])
        return create_coreml_backend(package, compute_units=compute_units, runtime=runtime,
                                     prefer=prefer, notify=notify, retile=retile,
                                     rechecks_left=rechecks_left - 1)
    raise BackendError("no Core ML runtime to try")  # not reached: runtimes is never empty


def load_chosen(compiled: Path, info: PackageInfo, units: str, runtime: str,
                retile: Retile | None) -> CoreMLBackend:
    """The backend as its saved trial proved it: its buffers, and its tile where the
    Neural Engine passed only at a smaller one. BackendError when that tile cannot be
    made here."""
    trial = load_trials(record_path(compiled, runtime)).get(units)
    buffers = (trial.buffers if trial else None) or "plain"
    if trial is not None and trial.tile is not None and trial.tile != info.tile:
        if retile is None:
            raise BackendError(f"Core ML ran '{units}' only at tile {trial.tile[0]}x"
                               f"{trial.tile[1]}, which this model cannot be converted to "
                               "here; omit tile= (or `vs-coreml-esrgan cache --clear`)")
        package = retile.package(trial.tile)
        info, compiled = read_package(package), compiled_model(package)
    return load_backend(compiled, units, info, runtime, buffers)


def load_backend(compiled: Path, units: str, info: PackageInfo, runtime: str,
                 buffers: str = "plain") -> CoreMLBackend:
    """The backend on one runtime (no checks: see ``create_coreml_backend``);
    ``buffers`` 'iosurface' (PyObjC only) feeds and answers through IOSurface-backed
    arrays."""
    if runtime != "pyobjc":
        return CoreMLBackend(predict=coremltools_predictor(compiled, units, info), info=info,
                             compute_units=units, runtime=runtime)
    loaded = load_pyobjc_predictor(
        compiled, units, input_name=info.input_name, output_name=info.output_name,
        output_shape=info.output_shape, output_dtype=info.output_dtype)
    backend = CoreMLBackend(predict=loaded.predict, info=info, compute_units=units,
                            runtime=runtime, model=loaded.model)
    return with_surfaces(backend) if buffers == "iosurface" else backend


def with_surfaces(backend: CoreMLBackend) -> CoreMLBackend:
    """The same loaded PyObjC model fed and answered through IOSurface-backed arrays
    (runtime 'pyobjc-iosurface'). BackendError when the surfaces cannot be made."""
    info = backend.info
    predictor = surface_predictor(backend.model, input_name=info.input_name,
                                  output_name=info.output_name, input_shape=info.input_shape,
                                  output_shape=info.output_shape)
    return CoreMLBackend(predict=predictor.predict, info=info,
                         compute_units=backend.compute_units, runtime="pyobjc-iosurface",
                         model=backend.model)


def smaller_tile_retry(retile: Retile, info: PackageInfo, runtime: str, notify: Notify
                       ) -> Retry:
    """A Neural Engine trial that failed at the package's tile, tried once in a child at
    the next smaller tile (its time scaled to the package's tile area); None when there is
    no smaller tile or it cannot be made."""
    def retry(failed: Trial) -> Trial | None:
        tile = retile.smaller(info.tile)
        if tile is None:
            return None
        notify(f"Core ML: the Neural Engine failed at tile {info.tile[0]}x{info.tile[1]} "
               f"({failed.error}); trying it once at tile {tile[0]}x{tile[1]} ...")
        try:
            package = retile.package(tile)
            small, compiled = read_package(package), compiled_model(package)
        except (BackendError, ModelError) as exc:
            notify(f"Core ML: no package at tile {tile[0]}x{tile[1]}: {exc}")
            return None
        reference, _ = reference_file(package, compiled)
        trial = trial_in_child(compiled, small, runtime, "ane", reference=reference)
        area = (info.tile[0] * info.tile[1]) / (tile[0] * tile[1])
        return replace(trial, tile=tile, first_error=failed.error, ms_per_tile=(
            None if trial.ms_per_tile is None else trial.ms_per_tile * area))
    return retry


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
