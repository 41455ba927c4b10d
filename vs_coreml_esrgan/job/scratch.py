"""A job's scratch directory, named for the process that owns it, and the removal of
those whose process is gone (a run killed with SIGKILL cannot remove its own)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

_PREFIX = "vs-coreml-esrgan-run-"
_OWNED = re.compile(re.escape(_PREFIX) + r"(\d+)-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: it exists
        return True
    return True


def remove_orphans(directory: Path | None = None) -> list[Path]:
    """Remove the scratch directories in ``directory`` (the system's temporary directory)
    whose owning process no longer runs. Returns those removed."""
    base = Path(directory or tempfile.gettempdir())
    removed = []
    with contextlib.suppress(OSError):
        for entry in base.iterdir():
            owner = _OWNED.match(entry.name)
            if owner and entry.is_dir() and int(owner.group(1)) != os.getpid() \
                    and not _alive(int(owner.group(1))):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
    return removed


@contextlib.contextmanager
def job_scratch() -> Iterator[str]:
    """A new scratch directory for a run (removed at the end), after removing orphans."""
    remove_orphans()
    with tempfile.TemporaryDirectory(prefix=f"{_PREFIX}{os.getpid()}-") as work:
        yield work
