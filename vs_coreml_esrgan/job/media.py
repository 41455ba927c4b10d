"""What ffmpeg and the source filter say about the input, and what the output can hold."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path


class JobError(Exception):
    """A problem to report to the user before or during a job (exit status 1)."""


def find_ffmpeg() -> str:
    """ffmpeg from PATH, else the one the imageio-ffmpeg wheel carries."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        raise JobError("no ffmpeg found: install one (brew install ffmpeg, apt install "
                       "ffmpeg) or pip install imageio-ffmpeg") from None


@dataclass(frozen=True)
class Stream:
    index: int
    kind: str  # "video", "audio", "subtitle", "attachment", "data"
    codec: str


_STREAM = re.compile(r"^\s*Stream #0:(\d+)\S*: (Video|Audio|Subtitle|Attachment|Data): "
                     r"(\w+)", re.MULTILINE)


def probe_streams(ffmpeg: str, source: Path, *, need_video: bool = True) -> list[Stream]:
    """The input's streams as ffmpeg reads them. Raises JobError when ffmpeg cannot read
    the file as media (with a video stream, unless ``need_video`` is False)."""
    result = subprocess.run([ffmpeg, "-hide_banner", "-i", str(source)], capture_output=True,
                            text=True, errors="replace")
    streams = [Stream(int(m.group(1)), m.group(2).lower(), m.group(3))
               for m in _STREAM.finditer(result.stderr)]
    if (need_video and not any(s.kind == "video" for s in streams)) or not streams:
        last = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
        reason = "no video stream" if streams or "Input #0" in result.stderr else last
        raise JobError(f"{source}: ffmpeg cannot read it as a video ({reason})")
    return streams


@dataclass(frozen=True)
class SourceInfo:
    """The source clip as the VapourSynth source filter delivers it."""

    width: int
    height: int
    num_frames: int
    fps: Fraction
    format_name: str
    props: dict[str, int]


def source_filters() -> list[str]:
    """Source filter namespaces available to VapourSynth here, best first."""
    import vapoursynth as vs

    core = vs.core
    return [name for name in ("bs", "ffms2", "lsmas") if hasattr(core, name)]


def source_call(namespace: str, path: Path) -> str:
    """Python expression opening ``path`` with a source filter (in a generated script)."""
    function = {"bs": "bs.VideoSource", "ffms2": "ffms2.Source",
                "lsmas": "lsmas.LWLibavSource"}[namespace]
    return f"core.{function}({str(path)!r})"


def probe_source(namespace: str, path: Path) -> SourceInfo:
    """Open the source as the job's script will, and read its first frame's properties."""
    import vapoursynth as vs

    core = vs.core
    try:
        clip = eval(source_call(namespace, path), {"core": core})  # our own fixed expression
        frame = clip.get_frame(0)
    except vs.Error as exc:
        raise JobError(f"{path}: the source filter {namespace} cannot open it ({exc})") from None
    if clip.format is None or clip.width == 0:
        raise JobError(f"{path}: the video changes size or format midway; not supported")
    props = {key: int(frame.props[key]) for key in
             ("_Matrix", "_Primaries", "_Transfer", "_Range", "_ColorRange", "_SARNum",
              "_SARDen") if key in frame.props}
    return SourceInfo(clip.width, clip.height, clip.num_frames,
                      Fraction(clip.fps_num, clip.fps_den), clip.format.name, props)


# H.273 code points -> ffmpeg's names. Unspecified values are tagged as the filter treats
# them: BT.709.
_MATRIX = {1: "bt709", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 8: "ycgco",
           9: "bt2020nc", 10: "bt2020c", 14: "ictcp"}
_PRIMARIES = {1: "bt709", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m",
              8: "film", 9: "bt2020", 11: "smpte431", 12: "smpte432"}
_TRANSFER = {1: "bt709", 4: "gamma22", 5: "gamma28", 6: "smpte170m", 7: "smpte240m",
             8: "linear", 13: "iec61966-2-1", 14: "bt2020-10", 15: "bt2020-12",
             16: "smpte2084", 18: "arib-std-b67"}


def video_filter(info: SourceInfo) -> str:
    """ffmpeg filter chain tagging the sample aspect ratio and colour like the source.

    Tags go through ``setparams``: ffmpeg's output options (-colorspace ...) are overridden
    by the frames' own (unset) properties."""
    props = info.props
    full = props["_Range"] == 1 if "_Range" in props else props.get("_ColorRange", 1) == 0
    num, den = props.get("_SARNum", 1), props.get("_SARDen", 1)
    sar = f"{num}/{den}" if num > 0 and den > 0 else "1/1"
    return (f"setsar={sar},setparams="
            f"colorspace={_MATRIX.get(props.get('_Matrix', 1), 'bt709')}:"
            f"color_primaries={_PRIMARIES.get(props.get('_Primaries', 1), 'bt709')}:"
            f"color_trc={_TRANSFER.get(props.get('_Transfer', 1), 'bt709')}:"
            f"range={'pc' if full else 'tv'}")


_MP4_AUDIO = {"aac", "mp3", "ac3", "eac3", "opus", "flac", "alac"}
_TEXT_SUBTITLES = {"subrip", "ass", "ssa", "mov_text", "webvtt", "text"}
CONTAINERS = (".mkv", ".mp4", ".mov", ".m4v")


def stream_maps(streams: list[Stream], output: Path, input_index: int = 1
                ) -> tuple[list[str], list[str]]:
    """(ffmpeg options, warnings) carrying the input's audio, subtitles, attachments,
    chapters and metadata into ``output``; streams its container cannot hold are dropped
    with a warning."""
    mkv = output.suffix.lower() == ".mkv"
    args: list[str] = ["-map_metadata", str(input_index), "-map_chapters", str(input_index)]
    warnings = []
    subtitle_codec = "copy" if mkv else "mov_text"
    fits = {"audio": lambda codec: codec in _MP4_AUDIO,
            "subtitle": lambda codec: codec in _TEXT_SUBTITLES,
            "attachment": lambda codec: False}
    for stream in streams:
        if stream.kind not in fits:
            continue  # the video comes from the pipe; data streams are not carried
        if mkv or fits[stream.kind](stream.codec):
            args += ["-map", f"{input_index}:{stream.index}"]
        else:
            warnings.append(f"{stream.kind} stream {stream.index} ({stream.codec}) cannot go "
                            f"into {output.suffix}; dropped (use .mkv to keep it)")
    args += ["-c:a", "copy", "-c:s", subtitle_codec, "-c:t", "copy"]
    return args, warnings
