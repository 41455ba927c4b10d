"""Helpers every benchmark shares: fetching frames as vspipe does, timing, statistics,
machine and version facts, markdown tables."""

from __future__ import annotations

import collections
import contextlib
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent.parent
DEFAULT_OUT_DIR = ROOT / "docs" / "benchmarks"
# Untimed frames first: the torch backend's traced graph is profiled and optimised on its
# first two calls, and every runtime allocates on its first; video is the steady state.
WARM_UP_FRAMES = 2


def fetch(clip, first: int, stop: int) -> None:
    """Frames [first, stop) as vspipe asks for them: up to core.num_threads requests
    outstanding, taken in order."""
    import vapoursynth as vs

    pending: collections.deque = collections.deque()
    n = first
    while n < stop or pending:
        while n < stop and len(pending) < vs.core.num_threads:
            pending.append(clip.get_frame_async(n))
            n += 1
        pending.popleft().result()


def timed_fetch(clip, first: int, stop: int) -> tuple[float, int]:
    """fetch, returning its wall time (s) and the fresh pages the kernel zeroed for this
    process meanwhile (minor page faults; see vs_coreml_esrgan/backends/cpu_memory.py)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    fetch(clip, first, stop)
    wall = time.perf_counter() - start
    return wall, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def median_spread(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, min, max)."""
    return statistics.median(values), min(values), max(values)


def size(text: str) -> tuple[int, int]:
    """'1920x1080' -> (1920, 1080)."""
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    if sys.platform == "darwin":  # the chip's name, e.g. "Apple M2 Pro"
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            cpu = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"],
                                 capture_output=True, text=True, check=True).stdout.strip()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} logical CPUs"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass
class TimedBackend:
    """Wraps a backend and measures how long it is busy: the union of the intervals in
    which at least one call is in progress. With several VapourSynth threads a call can
    wait for another (backends serialise their calls); counting each call's own wall time
    would count that wait twice and could exceed the wall time."""

    inner: object
    seconds: float = 0.0
    calls: int = 0
    _active: int = 0
    _since: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __getattr__(self, attribute: str):  # name, scale, input_dtype: the wrapped one's
        if attribute in ("inner", "_lock"):  # not set yet (construction): no recursion
            raise AttributeError(attribute)
        return getattr(self.inner, attribute)

    def reset(self) -> None:
        with self._lock:
            self.seconds, self.calls = 0.0, 0
            self._since = time.perf_counter()

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        with self._lock:
            if self._active == 0:
                self._since = time.perf_counter()
            self._active += 1
        try:
            return self.inner(tiles)
        finally:
            with self._lock:
                self._active -= 1
                self.calls += 1
                if self._active == 0:
                    self.seconds += time.perf_counter() - self._since
