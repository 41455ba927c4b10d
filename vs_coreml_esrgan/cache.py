"""The per-user cache of derived artefacts: converted packages, compiled models and the
compute units measured for them.

Entries are keyed by content hashes and created atomically: built under a temporary name
in the same directory, then renamed into place, so a crashed or concurrent build never
leaves a half-written entry that a later run would load.
"""

from __future__ import annotations

import contextlib
import os
import re
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
        _modes_from_umask(temporary)
        try:
            os.replace(temporary, target)
        except OSError:
            if not target.is_dir():  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(holder, ignore_errors=True)


def _modes_from_umask(root: Path) -> None:
    """Give a finished entry the modes a plain file and directory get from the user's
    umask: the temporary directory it was built in is private (mode 0700), and so is
    what some writers create inside (0600)."""
    mask = current_umask()
    paths = [root, *root.rglob("*")] if root.is_dir() else [root]
    for path in paths:
        if path.is_symlink():
            continue
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def current_umask() -> int:
    """The process's umask, read without changing it where the OS tells (Linux's
    /proc/self/status); elsewhere set and restored at once."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# What this project puts in the cache (see coreml/cached.py, backends/coreml_backend.py and
# backends/coreml_units.py): packages/<key>/ holding model.mlpackage and sha256,
# compiled/<key>.mlmodelc, and while one is built a temporary .<name>.<random>/ beside it;
# choices/<key>-<runtime>-<macOS>-<chip>.json files (written through .<name>.<pid>,
# measured under the lock .<name>.lock); references/<key>.npz (the parity gate's
# reference answer, written through .<key>.<pid>.npz).
# Nothing else is ours to delete.
_OURS = {
    "packages": re.compile(r"[0-9a-f]{32}|\.[0-9a-f]{32}\..+"),
    "compiled": re.compile(r"[0-9a-f]{32}\.mlmodelc|\.[0-9a-f]{32}\.mlmodelc\..+"),
    "choices": re.compile(r"\.?[0-9a-f]{32}-[a-z]+-[A-Za-z0-9.-]+\.json(\.\d+|\.lock)?"),
    "references": re.compile(r"\.?[0-9a-f]{32}(\.\d+)?\.npz"),
}
_FILE_GROUPS = {"choices", "references"}
_PACKAGE_FILES = {"model.mlpackage", "sha256"}


def _is_ours(group: str, entry: Path) -> bool:
    kind_ok = entry.is_file() if group in _FILE_GROUPS else entry.is_dir()
    if not kind_ok or entry.is_symlink() or not _OURS[group].fullmatch(entry.name):
        return False
    if group == "packages" and not entry.name.startswith("."):
        return {child.name for child in entry.iterdir()} <= _PACKAGE_FILES
    return True


def _scan() -> tuple[list[Path], list[Path]]:
    """(ours, others) under the cache's ``packages/``, ``compiled/``, ``choices/`` and
    ``references/``."""
    ours, others = [], []
    root = cache_dir()
    for group in _OURS:
        directory = root / group
        if directory.is_dir():
            for entry in sorted(directory.iterdir()):
                (ours if _is_ours(group, entry) else others).append(entry)
    return ours, others


def entries() -> list[tuple[Path, int]]:
    """(path, size in bytes) of every cache entry this project made (temporaries of an
    interrupted build excluded)."""
    found = []
    for entry in _scan()[0]:
        if not entry.name.startswith("."):
            size = entry.stat().st_size if entry.is_file() else sum(
                f.stat().st_size for f in entry.rglob("*") if f.is_file())
            found.append((entry, size))
    return found


def foreign_entries() -> list[Path]:
    """Files and directories in the cache's groups that this project did not make: never
    deleted (the cache directory may be set to one that holds other things)."""
    return _scan()[1]


def clear() -> int:
    """Remove every entry this project made, and temporaries left by interrupted builds;
    returns how many entries were removed. Anything else is left alone."""
    removed = 0
    for entry in _scan()[0]:
        if entry.is_file():
            entry.unlink(missing_ok=True)
        else:
            shutil.rmtree(entry, ignore_errors=True)
        removed += not entry.name.startswith(".")
    return removed
