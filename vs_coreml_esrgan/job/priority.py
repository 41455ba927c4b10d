"""``--background``: this process, and every process it starts afterwards, at background
priority, so the user's own work stays smooth while a job runs.

macOS: ``setpriority(PRIO_DARWIN_PROCESS, 0, PRIO_DARWIN_BG)``, the call ``taskpolicy -b``
makes (apple-oss-distributions/system_cmds ``taskpolicy/taskpolicy.c``); its man page
(``taskpolicy.8``) says the children inherit it. The background state lowers CPU
scheduling priority and throttles disk and network I/O (xnu ``bsd/sys/resource.h``:
``PRIO_DARWIN_PROCESS`` 4, ``PRIO_DARWIN_BG`` 0x1000).
Linux: nice 10 and the idle I/O class (``ioprio_set``, include/uapi/linux/ioprio.h:
``IOPRIO_WHO_PROCESS`` 1, ``IOPRIO_CLASS_IDLE`` 3 shifted by ``IOPRIO_CLASS_SHIFT`` 13),
set on each of this process's threads (Linux keeps both per thread; a child inherits the
values of the thread that starts it).
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from pathlib import Path

PRIO_DARWIN_PROCESS = 4
PRIO_DARWIN_BG = 0x1000
NICE = 10
IOPRIO_WHO_PROCESS = 1
IOPRIO_CLASS_IDLE = 3
IOPRIO_CLASS_SHIFT = 13
# ioprio_set, ioprio_get: arch/x86/entry/syscalls/syscall_64.tbl and
# include/uapi/asm-generic/unistd.h (arm64)
_IOPRIO_SYSCALLS = {"x86_64": (251, 252), "aarch64": (30, 31), "arm64": (30, 31)}


def lower_priority() -> str:
    """Put this process (and what it starts from now on) at background priority.
    Returns what was set, for the progress line. Raises OSError if the system refuses."""
    if sys.platform == "darwin":
        which = getattr(os, "PRIO_DARWIN_PROCESS", PRIO_DARWIN_PROCESS)
        value = getattr(os, "PRIO_DARWIN_BG", PRIO_DARWIN_BG)
        os.setpriority(which, 0, value)
        return "background priority (Darwin background: low CPU priority, throttled I/O)"
    threads = _threads()
    for tid in threads:
        current = os.getpriority(os.PRIO_PROCESS, tid)
        if current < NICE:
            os.setpriority(os.PRIO_PROCESS, tid, NICE)
    idle_io = all(_set_idle_io(tid) for tid in threads)
    return f"background priority (nice {NICE}{', idle I/O' if idle_io else ''})"


def _threads() -> list[int]:
    """This process's thread ids (Linux), else [0]: the calling process."""
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        return [0]
    return sorted(int(entry.name) for entry in tasks.iterdir() if entry.name.isdigit())


def _set_idle_io(tid: int) -> bool:
    """The idle I/O class for thread ``tid``; False where the system has no ioprio."""
    numbers = _IOPRIO_SYSCALLS.get(platform.machine())
    if not sys.platform.startswith("linux") or numbers is None:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    value = IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT
    return libc.syscall(numbers[0], IOPRIO_WHO_PROCESS, tid, value) == 0


def io_class(pid: int) -> int | None:
    """The I/O scheduling class of process ``pid`` (Linux; None elsewhere): 0 none,
    1 real time, 2 best effort, 3 idle."""
    numbers = _IOPRIO_SYSCALLS.get(platform.machine())
    if not sys.platform.startswith("linux") or numbers is None:
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    value = libc.syscall(numbers[1], IOPRIO_WHO_PROCESS, pid)
    if value < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return value >> IOPRIO_CLASS_SHIFT
