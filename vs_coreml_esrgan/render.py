"""Frames of the upscaled clip: the tiles of each frame run through the backend and are
written straight into a new frame of the output format, two frames in flight.

Takes a ready :class:`Setup` (backend, tile plan, batch); checks nothing else. Errors
raised while a frame is computed carry the filter's name and the frame number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import vapoursynth as vs

from . import frames, stitching, tiling
from .backends import Backend


@dataclass(frozen=True)
class Setup:
    """What the frames need: the backend, the plan of tiles, and tiles per call."""

    backend: Backend
    plan: tiling.TilePlan
    batch: int


# Frames in flight at once. ModifyFrame computes one frame at a time per instance, so with
# one instance a frame's reading, colour handling and stitching never overlap the network's
# work on the next; two interleaved instances sharing the backend (which runs one call at
# a time) let them. More would only queue at the backend.
_LANES = 2


def stitched_format(clip: vs.VideoNode) -> int:
    """The RGB format tiles are written into before the clip's own format is restored.

    RGB clips: their own. YUV and GRAY of at most 10 bits: RGB48, a third of RGBS's bytes
    to write and the cheapest for resize to read back (its rounding error, 2**-17, is
    1/128 of a 10-bit step); deeper or float ones: RGBS.
    """
    fmt = clip.format
    if fmt.color_family == vs.RGB:
        return fmt.id
    shallow = fmt.sample_type == vs.INTEGER and fmt.bits_per_sample <= 10
    return vs.RGB48 if shallow else vs.RGBS


def upscale_rgb(rgb: vs.VideoNode, setup: Setup, name: str, out_format: int) -> vs.VideoNode:
    """The upscaled RGB clip. Where it is an intermediate (``out_format`` differs from
    ``rgb``'s: the clip's own format is restored from it) none of its nodes keeps a
    frame cache; an RGB clip's last node is the user's and keeps VapourSynth's."""
    core = vs.core
    intermediate = out_format != rgb.format.id
    lanes = min(_LANES, core.num_threads, rgb.num_frames)
    if lanes == 1:
        lane = _upscale_lane(rgb, setup, name, 0, 1, out_format)
        return _uncached(lane) if intermediate else lane
    parts = [_uncached(_upscale_lane(core.std.SelectEvery(rgb, lanes, k,
                                                          modify_duration=False),
                                     setup, name, k, lanes, out_format))
             for k in range(lanes)]
    # the later lanes are a frame shorter where the length is not a multiple of lanes
    joined = _uncached(core.std.Interleave(parts, extend=True, modify_duration=False))
    trimmed = joined[:rgb.num_frames]
    return _uncached(trimmed) if intermediate else trimmed


def _uncached(clip: vs.VideoNode) -> vs.VideoNode:
    """``clip`` with VapourSynth's frame cache off: an intermediate's frames are asked
    for once, and a cache that keeps them makes each new output frame fresh memory for the
    kernel to fault in (43,000 page faults, 60 ms of system time, per 5120x2880 RGBS
    frame here). Returns the same node."""
    vs.core.std.SetVideoCache(clip, mode=0)  # sets the node's cache; returns nothing
    return clip


def _upscale_lane(rgb: vs.VideoNode, setup: Setup, name: str, first: int,
                  step: int, out_format: int) -> vs.VideoNode:
    """One ModifyFrame instance over frames ``first, first + step, ...`` of the clip
    (``rgb`` holds just those), naming the clip's own frame numbers in errors; frames of
    ``out_format``."""
    scale = setup.backend.scale
    blank = vs.core.std.BlankClip(rgb, width=rgb.width * scale, height=rgb.height * scale,
                                  format=out_format, keep=True)

    def upscale_frame(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        try:
            return _render(f[0], f[1], setup)
        except Exception as exc:  # VapourSynth shows it with a traceback; name the filter
            raise vs.Error(f"{name}: frame {first + n * step}: {exc}") from None

    return vs.core.std.ModifyFrame(blank, clips=[rgb, blank], selector=upscale_frame)


def _render(source: vs.VideoFrame, target: vs.VideoFrame, setup: Setup) -> vs.VideoFrame:
    """One upscaled frame; ValueError for non-finite samples in or out (never returned).

    Tiles are cut from the frame in the backend's input type and written straight into
    the output frame's planes (see :mod:`vs_coreml_esrgan.stitching`).
    """
    dtype = setup.backend.input_dtype
    image = frames.read_tiles_source(source, dtype)
    # A new frame, not a copy of the blank one: a copy's planes are copied again on the
    # first write (copy-on-write), a frame-sized pass for nothing.
    fmt = target.format
    out = vs.core.create_video_frame(fmt, target.width, target.height)
    planes = [np.asarray(out[plane]) for plane in range(fmt.num_planes)]
    try:
        if not _stitched_on_device(image, planes, frames.peak(fmt), setup):
            stitching.upscale_into(image, setup.plan, setup.backend, planes,
                                   peak=frames.peak(fmt), batch=setup.batch, dtype=dtype)
    except stitching.NonFiniteOutput as exc:
        raise ValueError(f"{exc}: {_overflow_cause(image, dtype)}") from None
    props = out.props  # a new frame has none
    for key, value in source.props.items():
        if key != "_Alpha":  # an alpha frame of the input size would not fit
            props[key] = value
    return out


def _stitched_on_device(image: np.ndarray, planes: list[np.ndarray], peak: int,
                        setup: Setup) -> bool:
    """For backends on a GPU (torch CUDA / MPS): cut and stitch there when the frame fits
    (see device_stitching.py); False where the host's writer is to run."""
    backend = setup.backend
    if not getattr(backend, "stitches_on_device", False):
        return False
    from . import device_stitching

    needed = device_stitching.frame_bytes(setup.plan, len(planes), setup.batch)
    if not device_stitching.fits(backend.device, needed):
        return False
    device_stitching.upscale_on_device(image, setup.plan, backend.run_tensor, planes,
                                       peak=peak, batch=setup.batch, device=backend.device,
                                       dtype=backend.dtype)
    return True


def _overflow_cause(image: np.ndarray, dtype: np.dtype | type) -> str:
    """Why a network computed NaN or infinity, and what to do about it."""
    if float(np.abs(image).max()) > 4:  # far outside [0, 1]: no network is made for that
        return ("the clip's samples reach far outside [0, 1] (float clips: clamp them "
                "first, e.g. with std.Expr)")
    if dtype == np.float16:
        return ("the network overflows float16 on this content: with torch pass "
                "precision='fp32'; a float16 .mlpackage, convert again with "
                "vs-coreml-esrgan convert --precision fp32")
    return "its weights are damaged or far too large for float32"
