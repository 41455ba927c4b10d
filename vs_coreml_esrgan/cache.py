"""The per-user cache of derived artefacts: converted packages, compiled models and the
compute units measured for them.

Entries are keyed by content hashes and created atomically: built under a temporary name
in the same directory, then renamed into place, so a crashed or concurrent build never
leaves a half-written entry that a later run would load.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

CACHE_ENV = "VS_COREML_ESRGAN_CACHE"


def cache_dir() -> Path:
    """``$VS_COREML_ESRGAN_CACHE``, else ``~/Library/Caches/vs-coreml-esrgan`` (macOS) or
    ``$XDG_CACHE_HOME/vs-coreml-esrgan`` (``~/.cache``)."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "vs-coreml-esrgan"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vs-coreml-esrgan"


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it to ``target``.

    The body creates the temporary path (as a directory or package). If another process
    finished the same entry first, its result is kept and ours discarded. On error nothing
    is left behind.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    holder = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    temporary = holder / target.name
    try:
        yield temporary
        try:
            os.replace(temporary, target)
        except OSError:
            if not target.is_dir():  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(holder, ignore_errors=True)


def entries() -> list[tuple[Path, int]]:
    """(path, size in bytes) of every cache entry."""
    root = cache_dir()
    found = []
    for group in ("packages", "compiled", "choices"):
        directory = root / group
        if directory.is_dir():
            for entry in sorted(directory.iterdir()):
                if not entry.name.startswith("."):
                    size = sum(f.stat().st_size for f in entry.rglob("*") if f.is_file()) \
                        if entry.is_dir() else entry.stat().st_size
                    found.append((entry, size))
    return found


def clear() -> int:
    """Remove every cache entry; returns how many were removed."""
    removed = 0
    for entry, _ in entries():
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed += 1
    return removed
