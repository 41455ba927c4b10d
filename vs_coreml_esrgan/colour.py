"""Getting any supported clip to RGB for the network, and back to its own format.

A YUV or GRAY frame is converted with its own ``_Matrix`` and ``_Range`` (frame properties
may change from frame to frame), and converted back with the same ones. The properties are
removed before ``resize`` sees them, so the values chosen here are the ones used:

- ``_Matrix`` absent or 2 (unspecified): BT.709;
- 1, 4-9: that matrix; a string naming one of ``resize``'s matrices ('709', '170m', ...)
  is read as that matrix;
- 0 (RGB) on a YUV clip, 10, 12, 13, 14 (constant luminance, ICtCp): refused with an error
  naming the frame (they need more than a matrix; convert to RGB first);
- anything else (3, 11, 15 and above, other strings): BT.709, with a warning in
  VapourSynth's log once per filter and value;
- ``_Range`` 0 limited, 1 full, else the older ``_ColorRange`` (0 full, 1 limited), else
  limited; other values: limited, with a warning. Float YUV and GRAY are always full range.
- ``_ChromaLocation`` 0-5 (left, centre, top-left, top, bottom-left, bottom): where the
  chroma samples sit, used both ways so subsampled chroma keeps its siting; absent: left
  (``resize``'s default); other values: left, with a warning.

The output frame carries the ``_Matrix`` and ``_Range`` that were used, and the input's
``_ChromaLocation`` (absent where the input had none).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

import vapoursynth as vs

_MATRIX_NAMES = {1: "709", 4: "fcc", 5: "470bg", 6: "170m", 7: "240m", 8: "ycgco",
                 9: "2020ncl"}
_NEEDS_MORE = {10: "BT.2020 constant luminance", 12: "chromaticity-derived non-constant "
               "luminance", 13: "chromaticity-derived constant luminance", 14: "ICtCp"}
_SIGNAL_PROPS = ["_Matrix", "_Range", "_ColorRange", "_ChromaLocation"]
_CHROMA_LOCATIONS = range(6)  # H.273's chroma sample location types 0-5
_DEFAULT_MATRIX = "709"

Warn = Callable[[str], None]


class ColourError(ValueError):
    """A frame whose colour properties cannot be followed."""


@dataclass(frozen=True)
class YuvSignal:
    """How a YUV or GRAY frame's samples map to RGB: a ``resize`` matrix name and range."""

    matrix: str
    range: str  # "limited" or "full"
    chromaloc: int | None = None  # _ChromaLocation; None: the frame has none (left)


def signal_of(props: vs.FrameProps, *, family: vs.ColorFamily = vs.YUV, n: int = 0,
              warn: Warn | None = None) -> YuvSignal:
    """Matrix and range of one frame, following the rules of the module docstring.

    Raises ColourError (naming frame ``n``) for values that cannot be followed; ``warn``
    receives a message for each fallback.
    """
    matrix = _matrix_of(props.get("_Matrix"), family, n, warn)
    full = _full_range(props, n, warn)
    return YuvSignal(matrix=matrix, range="full" if full else "limited",
                     chromaloc=_chroma_location(props, n, warn))


def _chroma_location(props: vs.FrameProps, n: int, warn: Warn | None) -> int | None:
    if "_ChromaLocation" not in props:
        return None
    value = props["_ChromaLocation"]
    if isinstance(value, int) and not isinstance(value, bool) and value in _CHROMA_LOCATIONS:
        return int(value)
    if warn is not None:
        warn(f"frame {n}: _ChromaLocation {value!r} is not 0-5; treated as left (0)")
    return 0


def _matrix_of(value: object, family: vs.ColorFamily, n: int, warn: Warn | None) -> str:
    if value is None or value == 2:
        return _DEFAULT_MATRIX
    if isinstance(value, bytes | str):
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        if text in _MATRIX_NAMES.values():
            return text
    elif isinstance(value, int):
        if value in _MATRIX_NAMES:
            return _MATRIX_NAMES[value]
        if value == 0 and family == vs.YUV:
            raise ColourError(
                f"frame {n}: _Matrix is 0 (RGB) on a YUV clip, so its planes hold G, B and "
                "R; make it RGB first, e.g. core.std.ShufflePlanes(clip, [2, 0, 1], vs.RGB) "
                "for 4:4:4, or set the real matrix with std.SetFrameProps(_Matrix=...)")
        if value in _NEEDS_MORE:
            raise ColourError(
                f"frame {n}: _Matrix {value} ({_NEEDS_MORE[value]}) needs the transfer "
                "characteristics too and is not supported; convert to RGB first, e.g. "
                "core.resize.Bicubic(clip, format=vs.RGBS), and pass the RGB clip")
    if warn is not None:
        warn(f"frame {n}: _Matrix {value!r} is not a known YUV matrix; treated as "
             "unspecified (BT.709)")
    return _DEFAULT_MATRIX


def _full_range(props: vs.FrameProps, n: int, warn: Warn | None) -> bool:
    for key, full_value in (("_Range", 1), ("_ColorRange", 0)):
        if key in props:
            value = props[key]
            if value in (0, 1) and not isinstance(value, bool | str | bytes):
                return int(value) == full_value
            if warn is not None:
                warn(f"frame {n}: {key} {value!r} is neither 0 nor 1; treated as limited "
                     "range")
            return False
    return False


def to_rgb(clip: vs.VideoNode, name: str = "upscale"
           ) -> tuple[vs.VideoNode, Callable[[vs.VideoNode], vs.VideoNode]]:
    """An RGB version of ``clip`` and a function that brings an (upscaled) RGB clip back to
    ``clip``'s format family and sample type.

    RGB clips pass unchanged (the filter reads every RGB sample type directly). YUV and
    GRAY frames become RGBS with their own matrix and range (see :func:`signal_of`); the
    way back uses the same ones and rounds to nearest. Frame 0 is checked now (ValueError);
    a later frame that cannot be followed is a ``vapoursynth.Error`` prefixed ``name``.
    """
    fmt = clip.format
    if fmt.color_family == vs.RGB:
        return clip, lambda upscaled: upscaled
    signals = _FrameSignals(clip, name)
    signals.of(0, clip.get_frame(0).props)  # errors in the first frame before any work
    core = vs.core
    plain = core.std.RemoveFrameProps(clip, _SIGNAL_PROPS)

    def forward(signal: YuvSignal) -> vs.VideoNode:
        if fmt.color_family == vs.GRAY:
            gray = core.resize.Point(plain, format=vs.GRAYS, range_in_s=signal.range)
            return core.std.ShufflePlanes([gray] * 3, planes=[0, 0, 0], colorfamily=vs.RGB)
        return core.resize.Bicubic(plain, format=vs.RGBS, matrix_in_s=signal.matrix,
                                   range_in_s=signal.range,
                                   chromaloc_in=signal.chromaloc or 0)

    rgb = signals.follow(core.std.BlankClip(clip, format=vs.RGBS, keep=True), forward)

    def restore(upscaled: vs.VideoNode) -> vs.VideoNode:
        bare = core.std.RemoveFrameProps(upscaled, _SIGNAL_PROPS)

        def back(signal: YuvSignal) -> vs.VideoNode:
            if fmt.color_family == vs.GRAY:
                converted = core.resize.Bicubic(bare, format=fmt.id, matrix_s=signal.matrix,
                                                range_s=signal.range)
            else:
                converted = core.resize.Bicubic(bare, format=fmt.id, matrix_s=signal.matrix,
                                                range_s=signal.range,
                                                chromaloc=signal.chromaloc or 0)
            if signal.chromaloc is None:  # resize tags its default; the input had none
                return core.std.RemoveFrameProps(converted, "_ChromaLocation")
            return core.std.SetFrameProps(converted, _ChromaLocation=signal.chromaloc)

        return signals.follow(core.std.BlankClip(upscaled, format=fmt.id, keep=True), back)

    return rgb, restore


class _FrameSignals:
    """Each frame's signal from the source clip's properties, and per-frame selection of
    clips built once per distinct signal."""

    def __init__(self, clip: vs.VideoNode, name: str) -> None:
        self._clip = clip
        self._name = name
        self._family = clip.format.color_family
        self._float = clip.format.sample_type == vs.FLOAT
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def of(self, n: int, props: vs.FrameProps) -> YuvSignal:
        signal = signal_of(props, family=self._family, n=n, warn=self._warn)
        if self._float:  # float YUV / GRAY is full range by definition
            signal = replace(signal, range="full")
        return signal

    def follow(self, template: vs.VideoNode, build: Callable[[YuvSignal], vs.VideoNode]
               ) -> vs.VideoNode:
        """A clip like ``template`` whose frame n comes from ``build(signal of frame n)``."""
        built: dict[YuvSignal, vs.VideoNode] = {}

        def select(n: int, f: vs.VideoFrame) -> vs.VideoNode:
            try:
                signal = self.of(n, f.props)
            except ColourError as exc:
                raise vs.Error(f"{self._name}: {exc}") from None
            with self._lock:
                if signal not in built:
                    built[signal] = build(signal)
                return built[signal]

        return vs.core.std.FrameEval(template, select, prop_src=self._clip)

    def _warn(self, message: str) -> None:
        key = message.split(": ", 1)[-1]
        with self._lock:
            if key in self._warned:
                return
            self._warned.add(key)
        vs.core.log_message(vs.MESSAGE_TYPE_WARNING, f"{self._name}: {message}")
