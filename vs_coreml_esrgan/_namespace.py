"""The Python side of the ``coreml_esrgan`` plugin namespace (see native/coreml_esrgan.c).

``core.coreml_esrgan.Upscale(...)`` imports this module and calls :func:`provide`, which
hands a fresh :class:`_Implementation` to the plugin for that one call.
"""

from __future__ import annotations

import os
import re

import vapoursynth as vs

_NAME = "Upscale"
_INTEGER = re.compile(r"[+-]?[0-9]+")

Text = str | bytes


def provide() -> None:
    """Register an implementation with the current core's plugin (called from C)."""
    vs.core.coreml_esrgan.RegisterImplementation(impl=_Implementation())


class _ArgumentError(ValueError):
    """An argument VapourSynth passed on that is not what Upscale takes."""


def _text(name: str, value: Text | None) -> str | None:
    if not isinstance(value, bytes):
        return value
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise _ArgumentError(f"{name} must be UTF-8 text, got bytes {value[:40]!r}") from None


def _path(value: Text | None) -> str | None:
    """A model name or path: bytes that are not UTF-8 are a file name in the file system's
    own encoding (Linux allows any bytes but / and NUL).

    VapourSynth hands a data argument any object as its text, a clip as a several-line
    description ('VideoNode\\n\\tFormat: ...'): text of several lines that is no file
    is refused naming its first line."""
    text = os.fsdecode(value) if isinstance(value, bytes) else value
    if text is not None and "\n" in text and not os.path.lexists(text):
        first = text.split("\n", 1)[0].strip()
        raise _ArgumentError(f"model must be a model name or a file path, got {first!r} "
                             f"and {text.count(chr(10))} more lines (a clip or another "
                             "object, not a name)")
    return text


def _integer(name: str, value: Text | int, wanted: str) -> int:
    """The numbers arrive as text (see the plugin's signature); only whole numbers pass."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    if not _INTEGER.fullmatch(text.strip()):
        raise _ArgumentError(f"{name} must be {wanted}, got {text!r}")
    return int(text)


def _tile(value: list[Text] | Text | None) -> int | list[int] | None:
    if value is None:
        return None
    wanted = "a positive int or [width, height]"
    if isinstance(value, list):
        return [_integer("tile", v, wanted) for v in value]
    return _integer("tile", value, wanted)


class _Implementation:
    """``Upscale``'s arguments as VapourSynth passes them → :func:`upscale`.

    Returns the upscaled clip, or the error message for a bad argument: VapourSynth would
    wrap a raised exception in a traceback, the plugin turns a string into a clean error.
    """

    def __call__(self, clip: vs.VideoNode, model: Text | None = None,
                 tile: list[Text] | Text | None = None, overlap: Text | None = None,
                 backend: Text | None = None, device: Text | None = None,
                 precision: Text | None = None, batch: Text | None = None,
                 compute_units: Text | None = None,
                 prefer: Text | None = None) -> vs.VideoNode | str:
        from .filter import upscale_named

        try:
            options: dict[str, object] = {
                "tile": _tile(tile),
                "overlap": None if overlap is None else _integer(
                    "overlap", overlap, "a non-negative int"),
                "batch": None if batch is None else _integer("batch", batch, "a positive int"),
                "backend": _text("backend", backend), "device": _text("device", device),
                "precision": _text("precision", precision),
                "compute_units": _text("compute_units", compute_units),
                "prefer": _text("prefer", prefer),
            }
            given = {k: v for k, v in options.items() if v is not None}
            return upscale_named(_NAME, clip, _path(model), **given)
        except _ArgumentError as exc:
            return _printable(f"{_NAME}: {exc}")
        except vs.Error as exc:
            return _printable(str(exc))


def _printable(message: str) -> str:
    """The plugin hands the message to C as UTF-8: file names that are not (decoded with
    surrogate escapes) are shown escaped."""
    return message.encode("utf-8", "backslashreplace").decode("utf-8")
