"""Run one Core ML trial (``coreml_trial``) in a child process and read its answer.

Whatever Core ML does there, this process lives on: coremltools #2758 reports a load that
succeeds while stderr shows ``ANECCompile() FAILED`` and a first ``predict()`` that ends
the process with SIGKILL; an MPSGraph assertion is a SIGABRT. Neither is an exception.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

from ..coreml.package import PackageInfo
from . import BackendError
from .parity_gate import compiler_errors

TRIAL_TIMEOUT_S = 600  # the Neural Engine compiler can take minutes on a large model
LOAD_TIMEOUT_S = 300  # of which the load (where that compiler runs) may take this much
WARMUP_RUNS = 2
TIMED_RUNS = 5
ERROR_PREFIX = "trial failed: "  # how the child marks its error line on stderr
# Failures that say nothing about the setting itself: never remembered.
TRANSIENT = ("could not start the trial", "skipped")


@dataclass(frozen=True)
class Trial:
    """One compute-unit setting on one runtime, tried in a child process.

    ``ms_per_tile``: median prediction time divided by the batch, when it ran; ``error``:
    why it did not run; ``psnr``: the parity gate's figure on the photograph against the
    executor (None when not checked) and ``rejected`` why it failed the gate;
    ``compiler_errors``: Neural Engine compiler lines seen on the child's stderr;
    ``placement`` / ``neural_engine_share``: the compute plan (macOS 14.4+);
    ``measured_at`` (Unix time) and ``coremltools`` (its version) date the verdict;
    ``buffers``: which buffers the time and parity are of ('plain', or 'iosurface' when
    IOSurface-backed ones passed and were faster; PyObjC only) and ``variants`` both
    buffers' outcomes; ``tile``: set when this is a Neural Engine retry at a smaller tile
    than the package's (``ms_per_tile`` then scaled to the package's tile area, so that
    trials compare) and ``first_error`` the failure at the package's own tile."""

    units: str
    ms_per_tile: float | None = None
    error: str | None = None
    placement: str | None = None
    neural_engine_share: float | None = None
    psnr: float | None = None
    rejected: str | None = None
    compiler_errors: tuple[str, ...] = ()
    runtime: str | None = None
    measured_at: float | None = None
    coremltools: str | None = None
    buffers: str | None = None
    variants: str | None = None
    tile: tuple[int, int] | None = None
    first_error: str | None = None

    @property
    def ran(self) -> bool:
        return self.error is None and self.ms_per_tile is not None

    @property
    def usable(self) -> bool:
        """Ran and passed the parity gate."""
        return self.ran and self.rejected is None

    @property
    def transient(self) -> bool:
        return (self.error or "").startswith(TRANSIENT)

    @classmethod
    def from_dict(cls, data: dict) -> Trial:
        """A Trial from its JSON form; TypeError/ValueError for anything else."""
        known = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or not isinstance(data.get("units"), str):
            raise ValueError(f"not a trial: {data!r}")
        values = {k: v for k, v in data.items() if k in known}
        values["compiler_errors"] = tuple(values.get("compiler_errors") or ())
        if values.get("tile") is not None:
            values["tile"] = (int(values["tile"][0]), int(values["tile"][1]))
        return cls(**values)


def trial_request(compiled: Path, info: PackageInfo, runtime: str, units: str,
                  reference: Path | None) -> dict:
    """What the child process (``coreml_trial``) needs to load, time and check the model."""
    return {"compiled": os.fspath(compiled), "units": units, "runtime": runtime,
            "input_name": info.input_name, "output_name": info.output_name,
            "input_shape": list(info.input_shape), "output_shape": list(info.output_shape),
            "input_dtype": info.input_dtype.name, "output_dtype": info.output_dtype.name,
            "precision": info.precision,
            "reference": None if reference is None else os.fspath(reference),
            "warmup": WARMUP_RUNS, "runs": TIMED_RUNS, "load_timeout": LOAD_TIMEOUT_S}


def coremltools_version() -> str | None:
    try:
        return importlib.metadata.version("coremltools")
    except importlib.metadata.PackageNotFoundError:
        return None


def trial_in_child(compiled: Path, info: PackageInfo, runtime: str, units: str, *,
                   reference: Path | None = None, timeout: float = TRIAL_TIMEOUT_S,
                   env: dict[str, str] | None = None) -> Trial:
    """Measure and check one setting in a child process; a crash, a timeout or an error
    there is a failed Trial, never an exception here."""
    request = json.dumps(trial_request(compiled, info, runtime, units, reference))
    stamp = {"runtime": runtime, "measured_at": time.time(),
             "coremltools": coremltools_version()}
    try:
        python = python_executable()
        done = subprocess.run(
            [python, "-m", "vs_coreml_esrgan.backends.coreml_trial", request],
            capture_output=True, text=True, timeout=timeout,
            env=child_environment() if env is None else env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as expired:
        seen = compiler_errors(_text(expired.stderr))
        return Trial(units, error=f"no result within {timeout:g} s", compiler_errors=seen,
                     **stamp)
    except (OSError, BackendError) as exc:
        return Trial(units, error=f"could not start the trial: {exc}", **stamp)
    seen = compiler_errors(done.stderr)
    if done.returncode < 0:
        try:
            name = signal.Signals(-done.returncode).name
        except ValueError:
            name = f"signal {-done.returncode}"
        return Trial(units, error=f"crashed ({name})", compiler_errors=seen, **stamp)
    if done.returncode != 0:
        # Core ML and Metal may log after our line: find it by its prefix.
        marked = [line.removeprefix(ERROR_PREFIX) for line in done.stderr.splitlines()
                  if line.startswith(ERROR_PREFIX)]
        lines = marked or done.stderr.strip().splitlines()
        return Trial(units, error=lines[-1] if lines else f"exit status {done.returncode}",
                     compiler_errors=seen, **stamp)
    try:
        answer = json.loads(done.stdout.strip().splitlines()[-1])
        return Trial.from_dict({**answer, **stamp, "compiler_errors": seen})
    except (ValueError, IndexError, TypeError):
        return Trial(units, error=f"unreadable trial result {done.stdout[-200:]!r}",
                     compiler_errors=seen, **stamp)


def _text(output: str | bytes | None) -> str:
    if isinstance(output, bytes):
        return output.decode("utf-8", "replace")
    return output or ""


def child_environment() -> dict[str, str]:
    """This environment, with this process's module path appended to PYTHONPATH: an
    interpreter found beside an embedding host (vspipe) may not know where this package
    and its dependencies are installed."""
    paths = [os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []
    paths += [entry for entry in sys.path if entry and Path(entry).is_dir()]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def python_executable() -> str:
    """This environment's Python interpreter. Under vspipe, Python is embedded and
    ``sys.executable`` can be vspipe itself, so the environment's ``bin`` is searched too.
    Raises BackendError when there is none."""
    directory = Path(sys.prefix) / ("Scripts" if os.name == "nt" else "bin")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    found = [Path(sys.executable)] if Path(sys.executable).name.startswith("python") else []
    found += [directory / f"python{version}", directory / "python3", directory / "python"]
    for candidate in found:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return os.fspath(candidate)
    raise BackendError(f"no Python interpreter found in {directory} to try Core ML in a "
                       "separate process")
