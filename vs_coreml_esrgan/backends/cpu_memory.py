"""Keep freed memory in the process, so that a network's layers on the CPU reuse it instead
of asking the kernel for fresh pages every layer.

PyTorch allocates every layer's output anew (tens of MB per layer for a tile) and frees
it a layer later. glibc's malloc gives such blocks back to the kernel (it trims the top
of the heap, and deletes the heaps of a thread's arena once they are empty, which is
where our single inference thread allocates), so the next layer's output is fresh
memory again, and every 4 KB page of it costs a page fault that zeroes it. Measured on
this project's 2-core Linux machine, per frame, in our torch backend: 22,000-95,000 minor
faults and 0.07-0.31 s of kernel time for realesr-animevideov3 at 480x270 (1.0-1.4 s
per frame), 475,000 faults and 1.5 s for realesrgan-x4plus at 192x108 (6.7 s). OpenVINO
plans its buffers once and takes 0-2 faults per frame. With the settings below: 95 and
62,000 faults (the rest: x4 layers' outputs above 32 MiB), peak memory no higher;
realesrgan-x4plus took 4.9 s against 6.7 s in one pair of runs (this machine's speed
drifts by up to 1.5x, so the fault counts are the firm figure).

Process-wide and irreversible (malloc has no scope): applied when a CPU backend is
created, never at import. Blocks over 32 MiB (glibc's largest mmap threshold) are still
mapped and unmapped each time.
"""

from __future__ import annotations

import ctypes
import os
import sys

# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_SETTINGS = (
    # Serve blocks up to 32 MiB from the heap (glibc's largest threshold on 64-bit) ...
    (_M_MMAP_THRESHOLD, 32 << 20),
    # ... never trim freed memory from the top of a heap below 1 GiB ...
    (_M_TRIM_THRESHOLD, 1 << 30),
    # ... and keep 64 MiB spare at the top of each heap, which also keeps an emptied
    # heap of a thread's arena from being deleted.
    (_M_TOP_PAD, 64 << 20),
)


def keep_freed_memory() -> bool:
    """On Linux with glibc, set malloc to keep freed memory for reuse (see the module's
    docstring). Returns whether every setting was applied; False elsewhere (macOS's and
    musl's allocators have no such settings). Safe to call more than once."""
    if not sys.platform.startswith("linux") or not _running_glibc():
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all([mallopt(parameter, value) == 1 for parameter, value in _SETTINGS])


def _running_glibc() -> bool:
    """Whether this process runs on glibc, asked of the C library itself (inspecting the
    executable, as platform.libc_ver does, would read vspipe's binary under vspipe)."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (ValueError, OSError, AttributeError):
        return False
