"""Converted packages in the user cache: convert once per model, tile, batch and precision.

An entry is a directory ``packages/<key>/`` holding ``model.mlpackage`` and ``sha256``,
the package's content digest, written together atomically. An entry whose digest no
longer matches (a damaged or half-deleted package) is rebuilt.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

from ..cache import atomic_directory, cache_dir
from ..checkpoint import LoadedModel, model_sha256
from ..network_spec import ModelError
from ..version import __version__
from .convert import convert_model
from .package import package_digest, read_package

Notify = Callable[[str], None]


def cache_key(model: LoadedModel, tile: tuple[int, int], batch: int, precision: str) -> str:
    text = f"{model_sha256(model.path)}|{tile[0]}x{tile[1]}|{batch}|{precision}|{__version__}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def cached_package(model: LoadedModel, *, tile: tuple[int, int], batch: int = 1,
                   precision: str = "fp16", notify: Notify | None = None) -> Path:
    """The converted package for these settings, converting (and reporting it through
    ``notify``) only when the cache has no intact entry."""
    entry = cache_dir() / "packages" / cache_key(model, tile, batch, precision)
    package = entry / "model.mlpackage"
    if entry.is_dir():
        if is_intact(entry):
            return package
        shutil.rmtree(entry, ignore_errors=True)
        if notify:
            notify(f"cache entry {entry} was damaged; converting again")
    if notify:
        notify(f"converting {model.path.name} ({model.spec.describe()}) to Core ML, tile "
               f"{tile[0]}x{tile[1]}, {precision}: once, kept in {entry.parent}")
    with atomic_directory(entry) as temporary:
        temporary.mkdir()
        built = convert_model(model, temporary / "model.mlpackage", tile=tile, batch=batch,
                              precision=precision)
        (temporary / "sha256").write_text(package_digest(built))
    return package


def is_intact(entry: Path) -> bool:
    """Whether a cache entry's package is readable and matches its recorded digest."""
    package, digest = entry / "model.mlpackage", entry / "sha256"
    try:
        if digest.read_text().strip() != package_digest(package):
            return False
        read_package(package)
    except (OSError, ModelError):
        return False
    return True
