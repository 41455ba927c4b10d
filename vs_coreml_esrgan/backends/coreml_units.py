"""Which Core ML compute units run a model, and which of them to use.

Every setting is tried in a child process of its own (``coreml_child``): load, warm up,
time a few predictions, then the parity gate (``parity_gate``): one tile of a natural
photograph compared with the ML Program executor's answer. Only a setting that ran and
passed is ever used. The verdicts are remembered per model, runtime, macOS build and chip
(``coreml_records``), so each setting is tried once there.

Compute units 'auto' tries 'gpu' first (a Neural Engine compile that was killed may keep
the CPU busy for minutes, speech-swift #464, which would slow whatever is timed next),
then 'ane' (skipped when Core ML lists no Neural Engine, and for float32 programs, which
it cannot run), then 'all'; 'cpu' only when none of them passes. ``prefer`` picks among
those that passed: 'speed' the fastest, 'efficiency' the Neural Engine when it is within
``EFFICIENCY_SLOWDOWN`` of the fastest (hanxiao/real-esrgan-coreml measured 4-5x less
energy per image there than on the GPU of an M3 Ultra, while 2.5-3x slower).

A Neural Engine trial that failed to compile or ran out of time at the package's tile is
tried once more at a smaller tile (about half the area, by the tile rule) when the model
can be converted again (``Retile``, from a checkpoint): the Neural Engine compiler is
reported to reject large shapes (coremltools #2247, executorch #8439). The verdict is saved
like any other, so the retry happens once per model, macOS and chip (a failure again only
after it expires, see ``coreml_records``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from ..coreml.package import PackageInfo
from . import BackendError, macos
from .coreml_child import Trial, trial_in_child
from .coreml_devices import neural_engine_present
from .coreml_records import load_trials, measuring_alone, record_path, save_trials

CANDIDATES = ("gpu", "ane", "all")
PREFERENCES = ("auto", "speed", "efficiency")
EFFICIENCY_SLOWDOWN = 2.0
UNIT_NAMES = {"ane": "Neural Engine", "gpu": "GPU", "all": "all units", "cpu": "CPU"}
DOCTOR_HINT = "`vs-coreml-esrgan doctor` reports every compute unit's time and parity"

RunTrial = Callable[[str], Trial]
Notify = Callable[[str], None]
Retry = Callable[[Trial], Trial | None]  # a failed Neural Engine trial, tried smaller


@dataclass(frozen=True)
class Retile:
    """The same model converted at another tile (only where a checkpoint can be converted
    again; the filter makes it): ``smaller(tile)`` the next smaller tile by the tile rule,
    None when there is none; ``package(tile)`` the package at that tile."""

    smaller: Callable[[tuple[int, int]], tuple[int, int] | None]
    package: Callable[[tuple[int, int]], Path]


def needs_smaller_tile(trial: Trial) -> bool:
    """A Neural Engine trial at the package's own tile that failed to compile (compiler
    errors on the child's stderr) or ran out of time."""
    if trial.units != "ane" or trial.tile is not None or trial.ran:
        return False
    error = trial.error or ""
    return bool(trial.compiler_errors) or error.startswith("no result within") \
        or "TimeoutError" in error


def retried(trial: Trial, retry: Retry | None) -> Trial:
    """``trial``, or its retry at a smaller tile where it needs one and one is possible."""
    if retry is None or not needs_smaller_tile(trial):
        return trial
    return retry(trial) or trial


def resolve_preference(prefer: str | None) -> str:
    """'speed' or 'efficiency'. 'auto' (None): efficiency on a Mac with a battery (a laptop,
    where heat and battery matter, a fanless one throttles), else speed. Raises
    BackendError for anything else."""
    prefer = prefer or "auto"
    if prefer not in PREFERENCES:
        raise BackendError(f"prefer must be one of {', '.join(PREFERENCES)}, got {prefer!r}")
    if prefer == "auto":
        return "efficiency" if macos.has_battery() else "speed"
    return prefer


@dataclass(frozen=True)
class Choice:
    units: str
    trials: tuple[Trial, ...]
    prefer: str = "speed"

    def message(self) -> str:
        """One line: what was chosen, its time, why, and why not the others."""
        best = next(t for t in self.trials if t.units == self.units)
        others = "; ".join(trial_text(t) for t in self.trials if t.units != self.units)
        line = f"Core ML: {self.units} chosen, {best.ms_per_tile:.1f} ms/tile"
        details = [_tile_text(best), _neural_engine_text(best), _psnr_text(best),
                   _buffers_text(best)]
        line += f" ({', '.join(d for d in details if d)})" if any(details) else ""
        line += f", prefer {self.prefer}"
        return line + (f"; {others}" if others else "")


def trial_text(trial: Trial) -> str:
    """'ane (Neural Engine) rejected: wrong output: ...', 'gpu 31.0 ms, PSNR 52.1 dB'."""
    name = f"{trial.units} ({UNIT_NAMES.get(trial.units, trial.units)})"
    compiler = (f" [compiler: {' | '.join(trial.compiler_errors)}]"
                if trial.compiler_errors else "")
    if trial.tile is not None:
        name += f" at tile {trial.tile[0]}x{trial.tile[1]}"
    if not trial.ran:
        return f"{name} failed: {trial.error}{compiler}"
    if trial.rejected:
        return f"{name} rejected: {trial.rejected}{compiler}"
    details = [_tile_text(trial), _neural_engine_text(trial), _psnr_text(trial),
               _buffers_text(trial)]
    return f"{trial.units} {trial.ms_per_tile:.1f} ms" + "".join(
        f", {d}" for d in details if d) + compiler


def _tile_text(trial: Trial) -> str:
    """'at tile 176x176 (the package's tile failed: ...)' for a retry at a smaller tile."""
    if trial.tile is None:
        return ""
    return (f"at tile {trial.tile[0]}x{trial.tile[1]}, time scaled to the package's tile "
            f"(the package's tile failed: {trial.first_error})")


def _buffers_text(trial: Trial) -> str:
    return "IOSurface buffers" if trial.buffers == "iosurface" else ""


def _psnr_text(trial: Trial) -> str:
    if trial.psnr is None:
        return ""
    return "output identical" if trial.psnr == float("inf") else f"PSNR {trial.psnr:.1f} dB"


def _neural_engine_text(trial: Trial) -> str:
    """'93 % of the cost on the Neural Engine' for settings that include it, when known."""
    if trial.neural_engine_share is None or trial.units not in ("ane", "all"):
        return ""
    return f"{trial.neural_engine_share * 100:.0f} % of the cost on the Neural Engine"


def candidates(info: PackageInfo) -> tuple[str, ...]:
    """The settings worth trying for a package, 'gpu' first: no 'ane' for float32
    programs."""
    if info.input_dtype == np.float32:
        return tuple(u for u in CANDIDATES if u != "ane")
    return CANDIDATES


def pick(trials: list[Trial] | tuple[Trial, ...], prefer: str) -> Trial | None:
    """The trial to use under ``prefer`` among those that passed; None when none did."""
    usable = [t for t in trials if t.usable]
    if not usable:
        return None
    fastest = min(usable, key=lambda t: t.ms_per_tile)
    if prefer == "efficiency":
        ane = next((t for t in usable if t.units == "ane"), None)
        planned = ane is not None and (ane.neural_engine_share is None
                                       or ane.neural_engine_share > 0)
        if planned and ane.ms_per_tile <= EFFICIENCY_SLOWDOWN * fastest.ms_per_tile:
            return ane
    return fastest


def choose(run_trial: RunTrial, settings: tuple[str, ...], *, prefer: str = "speed",
           known: dict[str, Trial] | None = None, retry: Retry | None = None) -> Choice:
    """Try each setting not ``known`` already (a valid saved verdict), a Neural Engine
    compile failure or timeout once more through ``retry``, pick under ``prefer``; 'cpu'
    only when none passed. Raises BackendError naming every failure when nothing passed."""
    known = dict(known or {})
    trials = [retried(known.get(units) or run_trial(units), retry) for units in settings]
    if pick(trials, prefer) is None:
        trials.append(known.get("cpu") or run_trial("cpu"))
    best = pick(trials, prefer)
    if best is None:
        raise NoCorrectUnits(trials)
    return Choice(units=best.units, trials=tuple(trials), prefer=prefer)


class NoCorrectUnits(BackendError):
    """No compute-unit setting ran and passed the parity gate; ``trials`` says why."""

    def __init__(self, trials: list[Trial]) -> None:
        super().__init__("Core ML gave no correct result on any compute units: "
                         + "; ".join(trial_text(t) for t in trials))
        self.trials = tuple(trials)


def skipped_neural_engine(units: str) -> Trial:
    return Trial(units, error="skipped: Core ML lists no Neural Engine on this Mac "
                              "(MLAllComputeDevices)")


def choose_compute_units(compiled: Path, info: PackageInfo, runtime: str, *,
                         notify: Notify, prefer: str = "speed",
                         reference: Path | None = None,
                         run_trial: RunTrial | None = None,
                         retry: Retry | None = None) -> str:
    """The units to use for this model under ``prefer``: from the saved verdicts for this
    model, runtime, macOS and chip, trying (``run_trial``, default: a child process each)
    and saving those not known yet. Reports the choice through ``notify``; raises
    BackendError when no setting gives correct output."""
    run = run_trial or partial(_run, compiled, info, runtime, reference)
    path = record_path(compiled, runtime)
    with measuring_alone(path, notify):
        known = load_trials(path)
        settings = candidates(info)
        pending = [u for u in settings if u not in known]
        if "ane" in pending and neural_engine_present() is False:
            known["ane"] = skipped_neural_engine("ane")
        if any(u not in known or (retry and needs_smaller_tile(known[u])) for u in settings):
            notify("Core ML: trying which compute units run this model correctly and "
                   "fastest on this Mac (once per model; a minute or two) ...")
        try:
            choice = choose(run, settings, prefer=prefer, known=known, retry=retry)
        except NoCorrectUnits as failed:
            save_trials(path, {**known, **{t.units: t for t in failed.trials}})
            raise
        save_trials(path, {**known, **{t.units: t for t in choice.trials}})
        notify(choice.message() + ("" if pending else " (measured earlier on this Mac; "
                                   "`vs-coreml-esrgan cache --clear` measures again)"))
        return choice.units


def check_units(compiled: Path, info: PackageInfo, runtime: str, units: str, *,
                notify: Notify, reference: Path | None = None,
                run_trial: RunTrial | None = None, retry: Retry | None = None) -> Trial:
    """The verdict for explicit compute ``units`` on ``runtime``: saved, or tried in a
    child process and saved; a Neural Engine compile failure or timeout tried once more
    through ``retry`` (at a smaller tile). BackendError for 'ane' where Core ML lists no
    Neural Engine. Reports a warning through ``notify`` when 'ane'
    places nothing on the Neural Engine."""
    if units == "ane" and neural_engine_present() is False:
        # Core ML would run it on the CPU and call it 'ane' (a virtual machine, an Intel Mac)
        raise BackendError("compute_units 'ane': Core ML lists no Neural Engine on this Mac "
                           "(MLAllComputeDevices: an Intel Mac or a virtual machine); use "
                           "compute_units 'auto', or 'gpu'")
    run = run_trial or partial(_run, compiled, info, runtime, reference)
    path = record_path(compiled, runtime)
    with measuring_alone(path, notify):
        known = load_trials(path)
        trial = known.get(units)
        if trial is None:
            notify(f"Core ML: checking compute units '{units}' on this Mac (once per model) "
                   "...")
            trial = run(units)
        checked = retried(trial, retry)
        if checked is not known.get(units):
            save_trials(path, {**known, units: checked})
        trial = checked
    if units == "ane" and trial.usable and trial.neural_engine_share == 0:
        notify("compute_units 'ane' asked for the Neural Engine, but Core ML plans none of "
               f"this model's cost there ({trial.placement}); compute_units 'auto' "
               "measures which unit is fastest on this Mac")
    return trial


def failure(units: str, trials: list[Trial]) -> BackendError:
    """The error for explicit compute ``units`` that failed on every runtime tried."""
    said = "; ".join(f"{t.runtime or 'runtime'}: {trial_text(t)}" for t in trials)
    return BackendError(f"Core ML compute units '{units}' failed the check on this Mac "
                        f"({said}); nothing was upscaled with them. Try compute_units "
                        f"'auto' or another backend; {DOCTOR_HINT} (a failure is checked "
                        "again after a week; `vs-coreml-esrgan cache --clear` sooner)")


def _run(compiled: Path, info: PackageInfo, runtime: str, reference: Path | None,
         units: str) -> Trial:
    return trial_in_child(compiled, info, runtime, units, reference=reference)
