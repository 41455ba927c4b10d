"""Compute units 'auto': measure once per model and Mac which Core ML setting is fastest.

Core ML's 'CPU and Neural Engine' leaves only the CPU when the Neural Engine's compiler
rejects a graph, and large shapes and some ops are reported to be rejected; whether our
networks reach the Neural Engine depends on the chip, the macOS and the tile. So each of
'ane', 'gpu' and 'all' ('gpu' and 'all' for float32 packages, which the Neural Engine
cannot run) is tried in a child process of its own (a crash in Core ML or Metal, such as
an MPSGraph abort, ends that child, not the user's process): load, warm up, time a few
predictions, read the compute plan. The fastest that ran is chosen ('cpu' is tried only
when all of them fail), saved in the cache under the compiled model's digest, the runtime,
the macOS version and the chip, and reused from then on.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np

from ..cache import cache_dir
from ..coreml.package import PackageInfo
from . import BackendError, macos

CANDIDATES = ("ane", "gpu", "all")
TRIAL_TIMEOUT_S = 600  # the Neural Engine compiler can take minutes on a large model
WARMUP_RUNS = 2
TIMED_RUNS = 5

RunTrial = Callable[[str], "Trial"]
TRANSIENT = ("no result within", "could not start the trial")
ERROR_PREFIX = "trial failed: "  # how the child marks its error line on stderr


@dataclass(frozen=True)
class Trial:
    """One compute-unit setting measured: ``ms_per_tile`` (median prediction time divided
    by the batch) when it ran, ``error`` when it did not. ``placement`` describes the
    compute plan's cost share per device, ``neural_engine_share`` its Neural Engine part
    (None before macOS 14.4)."""

    units: str
    ms_per_tile: float | None = None
    error: str | None = None
    placement: str | None = None
    neural_engine_share: float | None = None

    @property
    def ran(self) -> bool:
        return self.error is None and self.ms_per_tile is not None


@dataclass(frozen=True)
class Choice:
    units: str
    trials: tuple[Trial, ...]

    @property
    def provisional(self) -> bool:
        """Whether the choice may be an accident of this run (a trial timed out or could
        not start, or only the CPU ran): used, not kept."""
        return self.units == "cpu" or any(
            (t.error or "").startswith(TRANSIENT) for t in self.trials)

    def message(self) -> str:
        """One line: what was chosen, its time, and why not the others."""
        best = next(t for t in self.trials if t.units == self.units)
        others = "; ".join(_trial_text(t) for t in self.trials if t.units != self.units)
        line = f"Core ML: {self.units} chosen, {best.ms_per_tile:.1f} ms/tile"
        if _neural_engine_text(best):
            line += f" ({_neural_engine_text(best)})"
        return line + (f"; {others}" if others else "")


def _trial_text(trial: Trial) -> str:
    if not trial.ran:
        return f"{trial.units} failed ({trial.error})"
    text = f"{trial.units} {trial.ms_per_tile:.1f} ms"
    return text + (f", {_neural_engine_text(trial)}" if _neural_engine_text(trial) else "")


def _neural_engine_text(trial: Trial) -> str:
    """'93 % of the cost on the Neural Engine' for settings that include it, when known."""
    if trial.neural_engine_share is None or trial.units not in ("ane", "all"):
        return ""
    return f"{trial.neural_engine_share * 100:.0f} % of the cost on the Neural Engine"


def candidates(info: PackageInfo) -> tuple[str, ...]:
    """The settings worth trying for a package: no 'ane' for float32 programs."""
    if info.input_dtype == np.float32:
        return tuple(u for u in CANDIDATES if u != "ane")
    return CANDIDATES


def choose(run_trial: RunTrial, settings: tuple[str, ...]) -> Choice:
    """Try each setting, pick the fastest that ran; 'cpu' only when none did. Raises
    BackendError listing every failure when nothing ran."""
    trials = [run_trial(units) for units in settings]
    ran = [t for t in trials if t.ran]
    if not ran:
        trials.append(run_trial("cpu"))
        ran = [t for t in trials if t.ran]
    if not ran:
        raise BackendError("Core ML could not run this model on any compute units: "
                           + "; ".join(f"{t.units}: {t.error}" for t in trials))
    best = min(ran, key=lambda t: t.ms_per_tile)
    return Choice(units=best.units, trials=tuple(trials))


def choose_compute_units(compiled: Path, info: PackageInfo, runtime: str, *,
                         notify: Callable[[str], None],
                         run_trial: RunTrial | None = None) -> str:
    """The saved choice for this model, runtime, macOS and chip, else a new one measured
    with ``run_trial`` (default: each setting in a child process) and saved. Reports the
    choice through ``notify``; raises BackendError when no setting runs."""
    path = choice_path(compiled, runtime)
    with _measuring_alone(path, notify):
        saved = load_choice(path)
        if saved is not None:
            notify(saved.message() + " (measured earlier on this Mac; `vs-coreml-esrgan "
                   "cache --clear` measures again)")
            return saved.units
        notify("Core ML: measuring which compute units run this model fastest on this Mac "
               "(once per model; a minute or two) ...")
        choice = choose(run_trial or partial(trial_in_child, compiled, info, runtime),
                        candidates(info))
        if choice.provisional:
            notify(choice.message() + " (not saved: a trial did not finish or only the CPU "
                   "ran; measured again next time)")
        else:
            save_choice(path, choice)
            notify(choice.message())
        return choice.units


@contextlib.contextmanager
def _measuring_alone(path: Path, notify: Callable[[str], None]) -> Iterator[None]:
    """Hold an exclusive lock for this choice while it is read or measured: trials running
    at the same time (two encodes started together, several filters) would slow each other
    and save a wrong choice; the one that waits then finds the saved result. The lock is
    ``flock`` on a file beside the choice, released when the process ends, however it
    ends."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a+b") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            notify("Core ML: another process is measuring compute units for this model; "
                   "waiting for its result ...")
            fcntl.flock(lock, fcntl.LOCK_EX)
        except OSError:  # a file system without locks (some network mounts): go on alone
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def choice_path(compiled: Path, runtime: str) -> Path:
    """Where the choice for a compiled model (named by its package digest) is kept."""
    version = macos.version_text().replace(" ", "")
    chip = re.sub(r"[^A-Za-z0-9.]+", "-", macos.chip_name()).strip("-")
    return cache_dir() / "choices" / f"{compiled.stem}-{runtime}-{version}-{chip}.json"


def load_choice(path: Path) -> Choice | None:
    """A saved choice, or None when there is none or it is unreadable."""
    try:
        data = json.loads(path.read_text())
        trials = tuple(Trial(**t) for t in data["trials"])
        choice = Choice(units=data["units"], trials=trials)
        if choice.units not in (*CANDIDATES, "cpu"):
            return None
        choice.message()  # the chosen setting must be among the trials
    except (OSError, ValueError, KeyError, TypeError, StopIteration):
        return None
    return choice


def save_choice(path: Path, choice: Choice) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(json.dumps({"units": choice.units,
                                     "trials": [asdict(t) for t in choice.trials]}))
    os.replace(temporary, path)


def trial_request(compiled: Path, info: PackageInfo, runtime: str, units: str) -> dict:
    """What the child process (``coreml_trial``) needs to load and time the model."""
    return {"compiled": os.fspath(compiled), "units": units, "runtime": runtime,
            "input_name": info.input_name, "output_name": info.output_name,
            "input_shape": list(info.input_shape), "output_shape": list(info.output_shape),
            "input_dtype": info.input_dtype.name, "output_dtype": info.output_dtype.name,
            "warmup": WARMUP_RUNS, "runs": TIMED_RUNS}


def trial_in_child(compiled: Path, info: PackageInfo, runtime: str, units: str, *,
                   timeout: float = TRIAL_TIMEOUT_S, env: dict[str, str] | None = None
                   ) -> Trial:
    """Measure one setting in a child process; a crash, a timeout or an error there is
    a failed Trial, never an exception here."""
    request = json.dumps(trial_request(compiled, info, runtime, units))
    try:
        python = python_executable()
        done = subprocess.run(
            [python, "-m", "vs_coreml_esrgan.backends.coreml_trial", request],
            capture_output=True, text=True, timeout=timeout,
            env=child_environment() if env is None else env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return Trial(units, error=f"no result within {timeout:g} s")
    except (OSError, BackendError) as exc:
        return Trial(units, error=f"could not start the trial: {exc}")
    if done.returncode < 0:
        try:
            name = signal.Signals(-done.returncode).name
        except ValueError:
            name = f"signal {-done.returncode}"
        return Trial(units, error=f"crashed ({name})")
    if done.returncode != 0:
        # Core ML and Metal may log after our line: find it by its prefix.
        marked = [line.removeprefix(ERROR_PREFIX) for line in done.stderr.splitlines()
                  if line.startswith(ERROR_PREFIX)]
        lines = marked or done.stderr.strip().splitlines()
        return Trial(units, error=lines[-1] if lines else f"exit status {done.returncode}")
    try:
        return Trial(**json.loads(done.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError, TypeError):
        return Trial(units, error=f"unreadable trial result {done.stdout[-200:]!r}")


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
    raise BackendError(f"no Python interpreter found in {directory} to measure compute "
                       "units in a separate process; pass compute_units explicitly")
