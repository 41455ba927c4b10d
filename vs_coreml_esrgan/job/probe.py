"""The job's source as the script will see it, and the filter checked on it up front."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from .media import JobError
from .script import SOURCES, UpscaleOptions, source_call
from .video_index import VideoIndex

_PLUGINS = {"bs": "vapoursynth-bestsource", "ffms2": "vapoursynth-ffms2",
            "lsmas": "vapoursynth-lsmas"}


@dataclass(frozen=True)
class SourceInfo:
    """The source clip as the chosen source filter delivers it."""

    namespace: str
    width: int
    height: int
    num_frames: int
    fps: Fraction
    format_name: str
    format_id: int
    bits: int
    props: dict[str, int]

    @property
    def sar(self) -> str:
        num, den = self.props.get("_SARNum", 1), self.props.get("_SARDen", 1)
        return f"{num}/{den}" if num > 0 and den > 0 else "1/1"


def choose_source(requested: str) -> str:
    """The source filter for ``--source``: 'auto' takes bestsource, ffms2 or lsmas when
    installed, else the built-in one (PyAV)."""
    import vapoursynth as vs

    if requested not in SOURCES:
        raise JobError(f"--source must be one of {', '.join(SOURCES)}, got {requested}")
    if requested == "builtin":
        _check_pyav()
        return requested
    installed = [name for name in _PLUGINS if hasattr(vs.core, name)]
    if requested == "auto":
        if installed:
            return installed[0]
        _check_pyav()
        return "builtin"
    if requested not in installed:
        hint = " (it has no macOS wheel: use --source builtin)" if sys.platform == "darwin" \
            and requested != "lsmas" else ""
        raise JobError(f"--source {requested}: VapourSynth has no {requested} namespace; pip "
                       f"install {_PLUGINS[requested]}{hint}, or use --source builtin")
    return requested


def _check_pyav() -> None:
    try:
        import av  # noqa: F401
    except ImportError:
        raise JobError("the built-in source needs PyAV: pip install 'vs-coreml-esrgan[video]'"
                       " (or pip install av)") from None


def probe_source(namespace: str, path: Path, index: VideoIndex) -> SourceInfo:
    """Open the source as the job's script will, and read its first frame's properties."""
    import vapoursynth as vs

    from .source import source

    core = vs.core
    try:
        if namespace == "builtin":
            clip = source(path, index=None) if index is None else _indexed(path, index)
        else:
            clip = eval(source_call(namespace, path), {"core": core})  # our fixed expression
        frame = clip.get_frame(0)
    except vs.Error as exc:
        raise JobError(f"{path}: the source filter {namespace} cannot open it ({exc})") \
            from None
    if clip.format is None or clip.width == 0:
        raise JobError(f"{path}: the video changes size or format midway; not supported")
    props = {key: int(frame.props[key]) for key in
             ("_Matrix", "_Primaries", "_Transfer", "_Range", "_ColorRange", "_SARNum",
              "_SARDen", "_FieldBased") if key in frame.props}
    return SourceInfo(namespace, clip.width, clip.height, clip.num_frames,
                      Fraction(clip.fps_num, clip.fps_den), clip.format.name.upper(),
                      clip.format.id, clip.format.bits_per_sample, props)


def _indexed(path: Path, index: VideoIndex):
    import tempfile

    from .source import source

    with tempfile.TemporaryDirectory(prefix="vs-coreml-esrgan-") as work:
        saved = Path(work) / "index.json"
        index.save(saved)
        return source(path, index=saved)


def check_upscale(options: UpscaleOptions, info: SourceInfo) -> tuple[str, int]:
    """Create the filter on a blank clip shaped like the source, so a bad model, tile,
    overlap or backend is reported before any process starts. Returns the model's
    content digest (for resumable segments) and its scale."""
    import vapoursynth as vs

    from ..catalogue import DEFAULT_MODEL, is_model_name, resolve_model
    from ..checkpoint import model_sha256
    from ..filter import upscale
    from ..network_spec import ModelError

    if options.backend == "coreml" and sys.platform != "darwin":
        raise JobError("--backend coreml needs macOS (Core ML predicts only there); use "
                       "--backend torch or mil here")
    try:
        model = options.model or DEFAULT_MODEL
        path = resolve_model(model).path if is_model_name(model) else Path(model)
        blank = vs.core.std.BlankClip(width=info.width, height=info.height, length=1,
                                      format=info.format_id)
        upscaled = upscale(blank, str(path), tile=options.tile, overlap=options.overlap,
                           backend=options.backend, precision=options.precision or "auto")
        scale = upscaled.width // info.width
        if path.is_dir():
            from ..coreml.package import package_digest

            return package_digest(path), scale
        return model_sha256(path), scale
    except (vs.Error, ModelError, OSError) as exc:
        message = str(exc).removeprefix("upscale: ")
        raise JobError(f"the model cannot run: {message}") from None
