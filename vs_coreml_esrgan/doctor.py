"""``vs-coreml-esrgan doctor``: what this machine does with a model, as a markdown report.

The one command a Mac user runs and pastes into a bug report. It composes what exists:
conversion (``coreml.convert``), parity (``coreml.verify``), Core ML's compute plan and
the compute-unit trials (``backends.coreml_plan``, ``backends.coreml_units``: each Core ML
measurement in a child process of its own), the torch and executor backends. Every step
that fails is a row with its cause; the report itself never ends in a traceback.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .backends import macos

DEFAULT_MODEL = "realesr-animevideov3"
DEFAULT_SIZE = (1280, 720)
OVERLAP = 16


@dataclass
class Report:
    """Markdown sections, each a list of lines; ``failures`` counts failed steps."""

    sections: list[tuple[str, list[str]]] = field(default_factory=list)
    failures: int = 0

    def section(self, title: str) -> list[str]:
        lines: list[str] = []
        self.sections.append((title, lines))
        return lines

    def text(self) -> str:
        parts = ["# vs-coreml-esrgan doctor", ""]
        for title, lines in self.sections:
            parts += [f"## {title}", "", *lines, ""]
        return "\n".join(parts)


def step(report: Report, action: Callable[[], Any]) -> Any:
    """Run one step; on failure count it and answer 'failed: TYPE: message'."""
    try:
        return action()
    except Exception as exc:  # a report, not a crash: every failure becomes a row
        report.failures += 1
        return Failure(f"failed: {type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class Failure:
    text: str

    def __str__(self) -> str:
        return self.text


def run_doctor(model: str = DEFAULT_MODEL, size: tuple[int, int] = DEFAULT_SIZE) -> Report:
    """The report for ``model`` (a name or a file) at ``size`` (width, height)."""
    report = Report()
    _environment(report.section("Machine and versions"))
    loaded = step(report, lambda: _load(model))
    lines = report.section(f"Model {model} at {size[0]}x{size[1]}")
    if isinstance(loaded, Failure):
        lines.append(f"- model: {loaded}")
        return report
    from .coreml.tile_rule import coreml_tile_size
    from .tiling import plan_tiles

    tile = step(report, lambda: coreml_tile_size(size[0], size[1], OVERLAP,
                                                     loaded.network, loaded.spec))
    if isinstance(tile, Failure):
        lines.append(f"- tile: {tile}")
        return report
    plan = plan_tiles(size[0], size[1], tile, OVERLAP, loaded.spec.scale)
    lines += [f"- network: {loaded.spec.describe()}",
              f"- tile {tile[0]}x{tile[1]} (Core ML rule), {plan.num_tiles} tiles per frame, "
              f"compute waste {plan.compute_waste:.3f}"]
    with tempfile.TemporaryDirectory(prefix="vs-coreml-esrgan-doctor-") as work, \
            _cache_in(Path(work) / "cache"):
        package = _conversion(report, loaded, tile, Path(work))
        trials = _core_ml(report, loaded, package)
        _speed(report, loaded, package, tile, plan.num_tiles, trials)
    return report


@contextlib.contextmanager
def _cache_in(directory: Path) -> Iterator[None]:
    """The doctor's compiled models and trial results go to its own temporary cache, not
    the user's (children inherit the setting)."""
    from .cache import CACHE_ENV

    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(directory)
    try:
        yield
    finally:
        if before is None:
            del os.environ[CACHE_ENV]
        else:
            os.environ[CACHE_ENV] = before


def _environment(lines: list[str]) -> None:
    lines += ["| what | version |", "|---|---|",
              f"| chip | {macos.chip_name()} |",
              f"| system | {macos.version_text() if sys.platform == 'darwin' else platform.platform()} |",  # noqa: E501
              f"| Python | {platform.python_version()} |"]
    for name, distribution in (("vs-coreml-esrgan", "vs-coreml-esrgan"),
                               ("VapourSynth", "vapoursynth"), ("torch", "torch"),
                               ("coremltools", "coremltools"),
                               ("PyObjC CoreML", "pyobjc-framework-CoreML"),
                               ("spandrel", "spandrel")):
        try:
            version = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            version = "not installed"
        lines.append(f"| {name} | {version} |")
    lines.append(_thermal_row())


def _thermal_row() -> str:
    """The Mac's thermal state now (NSProcessInfo.thermalState, see job/thermal.py)."""
    from .job.thermal import thermal_now

    state = thermal_now()
    return f"| thermal state | {state or 'not readable here (macOS only)'} |"


def _load(model: str) -> Any:
    from .catalogue import is_model_name, resolve_model
    from .checkpoint import load_model

    return load_model(resolve_model(model).path if is_model_name(model) else Path(model))


def _conversion(report: Report, loaded: Any, tile: tuple[int, int], work: Path
                ) -> Path | Failure:
    """Convert (timed) and check the program against the checkpoint on the executor."""
    from .backends.mil_backend import create_mil_backend
    from .coreml.convert import convert_model

    lines = report.section("Conversion and parity (against torch fp32, random smooth tiles)")
    started = time.perf_counter()
    package = step(report, lambda: convert_model(loaded, work / "doctor.mlpackage",
                                                 tile=tile, precision="fp16"))
    if isinstance(package, Failure):
        lines.append(f"- convert (fp16): {package}")
        return package
    lines.append(f"- convert (fp16): {time.perf_counter() - started:.1f} s")
    lines.append(f"- parity, executor: {_parity(report, loaded, package, create_mil_backend)}")
    return package


def _parity(report: Report, loaded: Any, package: Path, make: Callable[[Path], Any]) -> str:
    from .coreml.package import read_package
    from .coreml.verify import compare

    def run() -> str:
        info = read_package(package)
        runner = make(package)
        result = compare(runner, loaded.network, info, rounds=1)
        verdict = "PASS" if result.passed else "FAIL"
        return (f"max abs error {result.max_abs_error:.3g}, PSNR {result.psnr:.1f} dB "
                f"({verdict}, needs {result.tolerance})")
    answer = step(report, run)
    return str(answer)


def _core_ml(report: Report, loaded: Any, package: Path | Failure
             ) -> dict[tuple[str, str], Any]:
    """Compute plan and trials per runtime and compute units (macOS), in child processes."""
    lines = report.section("Core ML")
    if sys.platform != "darwin":
        lines.append("- needs macOS: compute plan, Core ML parity, time per compute unit, "
                     "the compute units 'auto' would choose")
        return {}
    if isinstance(package, Failure):
        lines.append(f"- no package: {package}")
        return {}
    from .backends.coreml_backend import compiled_model, create_coreml_backend
    from .backends.coreml_plan import placement
    from .backends.coreml_pyobjc import pyobjc_available
    from .backends.coreml_units import candidates, choose, trial_in_child
    from .coreml.package import read_package

    info = step(report, lambda: read_package(package))
    if isinstance(info, Failure):
        lines.append(f"- package: {info}")
        return {}
    compiled = step(report, lambda: compiled_model(package))
    if isinstance(compiled, Failure):
        lines.append(f"- compile: {compiled}")
        return {}
    lines += ["| compute units | compute plan (share of estimated cost) |", "|---|---|"]
    for units in ("ane", "gpu", "all", "cpu"):
        lines.append(f"| {units} | {step(report, lambda u=units: placement(compiled, u).describe())} |")  # noqa: E501
    runtimes = ["pyobjc", "coremltools"] if pyobjc_available() else ["coremltools"]
    trials = {(runtime, units): trial_in_child(compiled, info, runtime, units)
              for runtime in runtimes for units in ("ane", "gpu", "all", "cpu")}
    report.failures += sum(not trial.ran for trial in trials.values())
    ran = {units: trials[(runtimes[0], units)] for units in ("ane", "gpu", "all", "cpu")}
    choice = step(report, lambda: choose(ran.__getitem__, candidates(info)))
    lines.append("")
    lines.append(f"- compute units 'auto' would choose: "
                 f"{choice.message() if not isinstance(choice, Failure) else choice}")
    if not isinstance(choice, Failure):
        lines.append(f"- parity, Core ML ({runtimes[0]}, {choice.units}): " + _parity(
            report, loaded, package,
            lambda p: create_coreml_backend(p, compute_units=choice.units,
                                            runtime=runtimes[0])))
    return trials


def _speed(report: Report, loaded: Any, package: Path | Failure, tile: tuple[int, int],
           tiles_per_frame: int, trials: dict[tuple[str, str], Any]) -> None:
    lines = report.section("Speed (one tile after a warm-up; frames/s = 1000 / (ms/tile x "
                           f"{tiles_per_frame} tiles))")
    lines += ["| backend | ms/tile | frames/s |", "|---|---|---|"]
    for (runtime, units), trial in trials.items():
        lines.append(_speed_row(f"Core ML {runtime} {units}", trial.ms_per_tile if trial.ran
                                else Failure(f"failed: {trial.error}"), tiles_per_frame))
    shape = (1, loaded.spec.num_in_ch, tile[1], tile[0])
    torch_device = "mps" if sys.platform == "darwin" else "cpu"
    label = f"torch {torch_device.upper()} {_torch_precision(torch_device)}"
    lines.append(_speed_row(label, step(report, lambda: _time_torch(loaded, torch_device,
                                                                    shape)), tiles_per_frame))
    if not isinstance(package, Failure):
        from .backends.mil_backend import create_mil_backend

        lines.append(_speed_row("executor (mil, fp16 program)", step(
            report, lambda: _time_backend(create_mil_backend(package), shape, np.float16)),
            tiles_per_frame))


def _torch_precision(device: str) -> str:
    """What the torch backend's precision 'auto' computes in on ``device``."""
    from .backends.torch_backend import resolve_precision

    return resolve_precision("auto", device)


def _speed_row(label: str, ms: float | Failure, tiles_per_frame: int) -> str:
    if isinstance(ms, Failure):
        return f"| {label} | {ms} | |"
    return f"| {label} | {ms:.1f} | {1000 / (ms * tiles_per_frame):.3f} |"


def _time_torch(loaded: Any, device: str, shape: tuple[int, ...]) -> float:
    from .backends.torch_backend import create_torch_backend

    backend = create_torch_backend(loaded.network, loaded.spec.scale, device=device)
    return _time_backend(backend, shape, backend.input_dtype)


def _time_backend(backend: Callable[[np.ndarray], np.ndarray], shape: tuple[int, ...],
                  dtype: Any, runs: int = 2) -> float:
    """Median milliseconds of ``runs`` calls after one warm-up call."""
    tiles = np.random.default_rng(0).random(shape).astype(dtype)
    backend(tiles)
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        backend(tiles)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds) * 1000
