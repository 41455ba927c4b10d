"""How hot the Mac says it is while a job runs: ``NSProcessInfo.thermalState`` through
PyObjC's Foundation, shown in the progress line when not nominal and summed per state
for the summary. A hint to show, not a control signal (macOS may throttle while it still
answers "nominal").

States (Foundation ``NSProcessInfo.h``, checked in PyObjC's ``test_nsprocessinfo.py``):
``NSProcessInfoThermalStateNominal`` 0, ``Fair`` 1, ``Serious`` 2, ``Critical`` 3
(macOS 10.10.3 and later).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

STATES = ("nominal", "fair", "serious", "critical")
Reader = Callable[[], str]


def thermal_reader() -> Reader | None:
    """A function answering the current state's name, or None where PyObjC's Foundation
    or ``thermalState`` is missing (not macOS)."""
    try:
        from Foundation import NSProcessInfo
    except ImportError:
        return None
    info = NSProcessInfo.processInfo()
    if not hasattr(info, "thermalState"):
        return None

    def read() -> str:
        state = int(info.thermalState())
        return STATES[state] if 0 <= state < len(STATES) else f"unknown ({state})"

    return read


def thermal_now() -> str | None:
    """The state now, or None where it cannot be read (for ``doctor``)."""
    read = thermal_reader()
    return None if read is None else read()


class HeatLog:
    """Time spent at each thermal state, from samples taken while a job runs."""

    def __init__(self, read: Reader, clock: Callable[[], float] = time.monotonic) -> None:
        self._read = read
        self._clock = clock
        self._state: str | None = None
        self._since = 0.0
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_this_machine(cls) -> HeatLog | None:
        read = thermal_reader()
        return None if read is None else cls(read)

    def sample(self) -> str:
        """Read the state now; the time since the last sample counts for the last state."""
        state = self._read()
        with self._lock:
            now = self._clock()
            if self._state is not None:
                self.seconds[self._state] = self.seconds.get(self._state, 0.0) + \
                    now - self._since
            self._state, self._since = state, now
        return state

    def progress_text(self, state: str) -> str:
        """What the progress line shows: nothing while nominal."""
        return "" if state == "nominal" else f"thermal: {state}"

    @contextlib.contextmanager
    def watching(self, bar, interval: float = 2.0) -> Iterator[None]:
        """Sample every ``interval`` seconds while the body runs, showing a state that is
        not nominal on ``bar`` (a tqdm bar, or None)."""
        stop = threading.Event()
        base = getattr(bar, "postfix", None) or ""  # a batch's bar names the file there

        def show(state: str) -> None:
            if bar is not None:
                text = ", ".join(t for t in (base, self.progress_text(state)) if t)
                bar.set_postfix_str(text, refresh=True)

        def loop() -> None:
            while not stop.wait(interval):
                show(self.sample())

        show(self.sample())
        thread = threading.Thread(target=loop, name="thermal state", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self.sample()

    def summary(self) -> str:
        """e.g. "thermal state: nominal 3m10s, serious 40s" (states in order of heat)."""
        parts = [f"{state} {_duration(self.seconds[state])}" for state in
                 sorted(self.seconds, key=lambda s: STATES.index(s) if s in STATES else 9)]
        return "thermal state: " + (", ".join(parts) if parts else "not sampled")


def _duration(seconds: float) -> str:
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
