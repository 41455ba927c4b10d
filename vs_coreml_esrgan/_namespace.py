"""The Python side of the ``coreml_esrgan`` plugin namespace (see native/coreml_esrgan.c).

``core.coreml_esrgan.Upscale(...)`` imports this module and calls :func:`provide`, which
hands a fresh :class:`_Implementation` to the plugin for that one call.
"""

from __future__ import annotations

import vapoursynth as vs

_NAME = "Upscale"


def provide() -> None:
    """Register an implementation with the current core's plugin (called from C)."""
    vs.core.coreml_esrgan.RegisterImplementation(impl=_Implementation())


def _text(value: str | bytes | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class _Implementation:
    """``Upscale``'s arguments as VapourSynth passes them → :func:`upscale`.

    Returns the upscaled clip, or the error message for a bad argument: VapourSynth would
    wrap a raised exception in a traceback, the plugin turns a string into a clean error.
    """

    def __call__(self, clip: vs.VideoNode, model: str | bytes | None = None,
                 tile: list[int] | int | None = None, overlap: int | None = None,
                 backend: str | bytes | None = None, device: str | bytes | None = None,
                 precision: str | bytes | None = None, batch: int | None = None,
                 compute_units: str | bytes | None = None) -> vs.VideoNode | str:
        from .filter import upscale

        options: dict[str, object] = {
            # VapourSynth hands over a one-element array as a plain int.
            "tile": tile[0] if isinstance(tile, list) and len(tile) == 1 else tile,
            "device": _text(device),
            "overlap": overlap, "backend": _text(backend), "precision": _text(precision),
            "batch": batch, "compute_units": _text(compute_units),
        }
        given = {k: v for k, v in options.items() if v is not None}
        try:
            return upscale(clip, _text(model), **given)
        except vs.Error as exc:
            return f"{_NAME}: {str(exc).removeprefix('upscale: ')}"
