"""``vs-coreml-esrgan doctor``: what this machine does with a model, as a markdown report.

The one command a Mac user runs and pastes into a bug report. It composes what exists:
conversion (``coreml.convert``), parity (``coreml.verify``), the compute-unit trials
(``backends.coreml_child``: each Core ML load, timing, parity check against the executor
and compute plan in a child process of its own, so nothing Core ML does ends the report),
the fallback of backend 'auto' (``backends.fallback``, ``backends.torch_gate``), the torch
and executor backends. Every figure is measured by this run on this machine. Every step
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
    model_loaded: bool = True  # False: nothing about the model could be checked

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
        report.model_loaded = False
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
    """Per runtime and compute units, each in a child process of its own: time, parity on
    the photograph against the executor, Neural Engine compiler errors, the compute plan's
    Neural Engine share. Then the devices present, the choice under both preferences and
    what backend 'auto' would run."""
    lines = report.section("Core ML (each unit tried in a child process on this machine, "
                           "checked against the ML Program executor on a photograph)")
    if sys.platform != "darwin":
        lines.append("- needs macOS: time, parity and compute plan per compute unit, the "
                     "units 'auto' would choose; off macOS the project's tests run this "
                     "logic only against doubles of Core ML (tests/fakes)")
        lines.append("- backend 'auto' here: torch (a checkpoint) or the executor (a "
                     ".mlpackage)")
        return {}
    if isinstance(package, Failure):
        lines.append(f"- no package: {package}")
        lines.append(f"- backend 'auto' would run: {_torch_fallback(report, loaded)}")
        return {}
    from .backends.coreml_backend import compiled_model
    from .backends.coreml_child import trial_in_child
    from .backends.coreml_devices import compute_devices, unit_devices_table
    from .backends.coreml_pyobjc import pyobjc_available
    from .backends.coreml_records import reference_file
    from .coreml.package import read_package

    info = step(report, lambda: read_package(package))
    compiled = step(report, lambda: compiled_model(package))
    if isinstance(info, Failure) or isinstance(compiled, Failure):
        lines.append(f"- package: {info if isinstance(info, Failure) else compiled}")
        return {}
    devices = compute_devices()
    lines.append("- compute devices Core ML lists: " + (
        ", ".join(devices) if devices is not None else "unknown (needs macOS 14)"))
    lines += ["", *unit_devices_table(devices), ""]
    reference, why = reference_file(package, compiled)
    if reference is None:
        lines.append(f"- parity not checked: {why}")
    runtimes = ["pyobjc", "coremltools"] if pyobjc_available() else ["coremltools"]
    trials = {(runtime, units): trial_in_child(compiled, info, runtime, units,
                                               reference=reference)
              for runtime in runtimes for units in ("gpu", "ane", "all", "cpu")}
    report.failures += sum(not trial.usable for trial in trials.values())
    lines += ["", "| runtime | units | ms/tile | PSNR | verdict | compute plan | "
              "compiler errors | buffers (plain / IOSurface) |",
              "|---|---|---|---|---|---|---|---|"]
    lines += [_trial_row(trial) for trial in trials.values()]
    lines.append("")
    _choices(lines, runtimes, trials)
    lines.append(f"- backend 'auto' would run: {_auto_decision(report, loaded, trials)}")
    return trials


def _trial_row(trial: Any) -> str:
    ms = f"{trial.ms_per_tile:.1f}" if trial.ran else "-"
    psnr = "-" if trial.psnr is None else (
        "identical" if trial.psnr == float("inf") else f"{trial.psnr:.1f} dB")
    verdict = ("pass" if trial.usable else f"rejected: {trial.rejected}" if trial.ran
               else f"failed: {trial.error}")
    errors = " / ".join(trial.compiler_errors) or "none"
    buffers = f"{trial.buffers} used: {trial.variants}" if trial.variants else "plain"
    return (f"| {trial.runtime} | {trial.units} | {ms} | {psnr} | {verdict} | "
            f"{trial.placement or '-'} | {errors} | {buffers} |")


def _choices(lines: list[str], runtimes: list[str], trials: dict) -> None:
    """The units 'auto' takes per runtime under both preferences, with the buffers (plain
    or IOSurface-backed, whichever passed and was faster in the unit's trial)."""
    from .backends.coreml_units import pick, resolve_preference

    default = resolve_preference(None)
    for runtime in runtimes:
        ran = [trial for (r, _), trial in trials.items() if r == runtime]
        for prefer in ("speed", "efficiency"):
            best = pick(ran, prefer)
            text = f"{best.units}, {best.ms_per_tile:.1f} ms/tile, {best.buffers or 'plain'} " \
                "buffers" if best else "none (no unit passed)"
            mark = " (the default on this Mac)" if prefer == default else ""
            lines.append(f"- compute units 'auto', {runtime}, prefer {prefer}{mark}: {text}")


def _auto_decision(report: Report, loaded: Any, trials: dict) -> str:
    passed = [trial for trial in trials.values() if trial.usable]
    if passed:
        return "Core ML (a unit passed the parity check)"
    return "not Core ML (no unit passed); " + _torch_fallback(report, loaded)


def _torch_fallback(report: Report, loaded: Any) -> str:
    """Whether torch on MPS passes its parity check (in a child), else the CPU."""
    from .backends.torch_gate import check_torch_device
    from .checkpoint import model_sha256

    psnr = step(report, lambda: check_torch_device(loaded.path, "mps", "fp16",
                                                   model_sha256(loaded.path)))
    if isinstance(psnr, Failure):
        return f"torch on the CPU (torch on MPS: {psnr})"
    return f"torch on MPS, fp16 (PSNR {psnr:.1f} dB against torch fp32 on the CPU)"


def _speed(report: Report, loaded: Any, package: Path | Failure, tile: tuple[int, int],
           tiles_per_frame: int, trials: dict[tuple[str, str], Any]) -> None:
    lines = report.section("Speed (one tile after a warm-up; frames/s = 1000 / (ms/tile x "
                           f"{tiles_per_frame} tiles))")
    lines += ["| backend | ms/tile | frames/s |", "|---|---|---|"]
    for (runtime, units), trial in trials.items():
        outcome = trial.ms_per_tile if trial.usable else Failure(
            f"rejected: {trial.rejected}" if trial.ran else f"failed: {trial.error}")
        lines.append(_speed_row(f"Core ML {runtime} {units}", outcome, tiles_per_frame))
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
