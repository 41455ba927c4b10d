"""What is remembered about a compiled model on this Mac: each compute unit's verdict (time,
parity, error) per runtime, and the parity gate's reference answer.

A record is kept per compiled model (named by its package digest), runtime, macOS version
and build, and chip: ``choices/<digest>-<runtime>-<macOS>-<chip>.json``, holding the
trials. A passing verdict holds until one of those changes; a failing one also expires
after ``FAILURE_DAYS`` days or when coremltools changes (a Neural Engine compile that
failed or timed out is tried again then, not on every run: speech-swift #464 saw the
compiler service keep a core busy for minutes after its client was killed).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..cache import cache_dir
from . import macos
from .coreml_child import Trial, coremltools_version
from .parity_gate import gate_tiles

FAILURE_DAYS = 7


def record_path(compiled: Path, runtime: str) -> Path:
    """Where the verdicts for a compiled model (named by its package digest) are kept."""
    version = macos.version_text().replace(" ", "")
    build = macos.build_text()
    if build:
        version += f"-{build}"
    chip = re.sub(r"[^A-Za-z0-9.]+", "-", macos.chip_name()).strip("-")
    return cache_dir() / "choices" / f"{compiled.stem}-{runtime}-{version}-{chip}.json"


def still_valid(trial: Trial, now: float | None = None) -> bool:
    """A verdict worth reusing: a passing one always; a failing one for ``FAILURE_DAYS``
    under the same coremltools; a transient one never."""
    if trial.transient:
        return False
    if trial.usable:
        return True
    now = time.time() if now is None else now
    age_ok = trial.measured_at is not None and now - trial.measured_at < FAILURE_DAYS * 86400
    return age_ok and trial.coremltools == coremltools_version()


def load_trials(path: Path) -> dict[str, Trial]:
    """The saved verdicts by compute units, only those still valid; {} when there are none
    or the file is unreadable."""
    try:
        data = json.loads(path.read_text())
        trials = [Trial.from_dict(t) for t in data["trials"]]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {t.units: t for t in trials if still_valid(t)}


def save_trials(path: Path, trials: dict[str, Trial]) -> None:
    """Save the verdicts worth keeping (not the transient ones), atomically."""
    kept = [asdict(t) for t in trials.values() if not t.transient]
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(json.dumps({"trials": kept}))
    os.replace(temporary, path)


@contextlib.contextmanager
def measuring_alone(path: Path, notify: Callable[[str], None]) -> Iterator[None]:
    """Hold an exclusive lock for this record while it is read or measured: trials running
    at the same time (two encodes started together, several filters) would slow each other
    and save wrong times; the one that waits then finds the saved result. The lock is
    ``flock`` on a file beside the record, released when the process ends, however it
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


def reference_file(package: str | os.PathLike[str], compiled: Path) -> tuple[Path | None, str]:
    """The parity gate's input tiles and the executor's answer for them, saved once per
    package as ``references/<digest>.npz`` (arrays ``tiles`` and ``expected``). Returns
    (path, '') or (None, why) when the executor cannot run this program."""
    from ..coreml.mil import MilProgram
    from ..network_spec import ModelError

    path = cache_dir() / "references" / f"{compiled.stem}.npz"
    if path.is_file():
        return path, ""
    try:
        program = MilProgram.load(package)
    except ModelError as exc:
        return None, f"the executor cannot run this program ({exc})"
    tiles = gate_tiles(program.info.input_shape, program.info.input_dtype)
    expected = np.asarray(program(tiles), dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.npz")
    np.savez(temporary, tiles=tiles, expected=expected)
    os.replace(temporary, path)
    return path, ""
