"""What the output shows, whichever source filter reads the file: a filter that can
deliver the whole picture, one reading of what players follow (pixel aspect, colour
tags), and an output chroma layout the upscaled size fits."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .encoders import Encoder
from .media import JobError
from .probe import SourceInfo
from .script import OutputFormat
from .source import delivered_format
from .video_index import VideoIndex


def able_source(namespace: str, index: VideoIndex, requested: str, path: Path) -> str:
    """A source filter that can deliver the whole picture of ``path``: bestsource (and the
    other plugins) crop a subsampled picture of odd size to even (213x120 4:2:0 ->
    212x120) and take only UTF-8 file names, so 'auto' takes the built-in source for such
    files, and an explicit choice is refused."""
    import vapoursynth as vs

    if namespace == "builtin":
        return namespace
    _, format_name = delivered_format(index.pix_fmt)
    fmt = vs.core.get_video_format(getattr(vs, format_name))
    if index.width % (1 << fmt.subsampling_w) or index.height % (1 << fmt.subsampling_h):
        problem = (f"the input is {index.width}x{index.height} {index.pix_fmt}, and the "
                   f"source filter {namespace} crops it to an even size (losing its last "
                   "column or row)")
    elif str(path) != str(path).encode("utf-8", "replace").decode("utf-8"):
        problem = (f"the source filter {namespace} takes only UTF-8 file names, and this "
                   "one is not")
    else:
        return namespace
    if requested == "auto":
        return "builtin"
    raise JobError(f"{problem}; use --source builtin (or auto), which takes it whole")


def one_reading(info: SourceInfo, index: VideoIndex) -> SourceInfo:
    """``info`` with what the output is tagged with read one way, whichever source filter
    delivers the frames: the pixel aspect players show (bestsource takes the bitstream's
    even where the container states another) and the primaries and transfer the stream
    and container tag (bestsource also reads an ICC profile, PyAV cannot)."""
    props = dict(info.props)
    props["_Primaries"], props["_Transfer"] = index.colour_tags
    if index.sar[0] > 0:
        props["_SARNum"], props["_SARDen"] = index.sar[::-1] if index.transposed \
            else index.sar
    return replace(info, props=props)


def fitting_format(fmt: OutputFormat, encoder: Encoder, name: str, width: int, height: int,
                    warnings: list[str]) -> OutputFormat:
    """``fmt``, or 4:4:4 where the upscaled size is odd for its subsampling (an x3 model on
    213x120); JobError where the encoder takes no 4:4:4."""
    sub_w, sub_h = {"420": (2, 2), "422": (2, 1)}.get(fmt.layout, (1, 1))
    if width % sub_w == 0 and height % sub_h == 0:
        return fmt
    chroma = f"4:{fmt.layout[1]}:{fmt.layout[2]}"
    if "444" not in encoder.layouts:
        raise JobError(f"the upscaled picture is {width}x{height}, which {chroma} cannot "
                       f"hold, and encoder {name} writes no 4:4:4; use an encoder that does "
                       "(x264, x265, ffv1)")
    warnings.append(f"the upscaled picture is {width}x{height}, which {chroma} cannot hold: "
                    "written as 4:4:4")
    return replace(fmt, layout="444")
