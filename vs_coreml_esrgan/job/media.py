"""What the input file holds (read with PyAV), and which of its streams an output can hold."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from .video_index import SourceError, open_media, video_stream


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
    metadata: dict[str, str] = field(default_factory=dict)
    disposition: int = 0  # libavformat's AV_DISPOSITION_* bits (1: default, 1024: cover)

    @property
    def default(self) -> bool:
        return bool(self.disposition & 1)

    @property
    def cover(self) -> bool:
        return bool(self.disposition & 1024)  # AV_DISPOSITION_ATTACHED_PIC


@dataclass(frozen=True)
class MediaInfo:
    """The input's streams, which one is the video the job upscales, and the time at
    which the file starts (ffmpeg measures every stream from it)."""

    streams: list[Stream]
    video: int
    start: Fraction  # seconds

    @property
    def video_stream(self) -> Stream:
        return next(s for s in self.streams if s.index == self.video)


def probe_media(source: Path, *, need_video: bool = True) -> MediaInfo:
    """The file's streams as ffmpeg's libraries read them. Raises JobError when it is not
    media (or has no video stream, unless ``need_video`` is False)."""
    try:
        with open_media(source) as container:
            streams = [Stream(s.index, s.type, _codec_name(s), dict(s.metadata),
                              int(s.disposition)) for s in container.streams]
            start = Fraction(container.start_time or 0, 1_000_000)
            try:
                video = video_stream(container).index
            except SourceError:
                if need_video:
                    raise JobError(f"{source}: ffmpeg cannot read it as a video (it has no "
                                   "video stream)") from None
                video = -1
    except SourceError as exc:
        raise JobError(f"{exc}") from None
    return MediaInfo(streams, video, start)


def _codec_name(stream) -> str:
    """ffmpeg's name of the stream's codec (e.g. "subrip", "mp3"), not its decoder's
    ("srt", "mp3float"); "none" for streams with no codec (some attachments and data)."""
    try:
        return stream.codec_context.codec.canonical_name
    except Exception:  # PyAV raises various errors for streams without a codec
        return "none"


# Which non-video codecs each output container takes as they are (checked against ffmpeg's
# muxers: mp4 has no PCM, mov does; Matroska takes anything).
_MP4_AUDIO = {"aac", "mp3", "mp2", "ac3", "eac3", "opus", "flac", "alac", "dts", "truehd"}
_MOV_AUDIO = _MP4_AUDIO | {"pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s24be", "pcm_s32le",
                           "pcm_s32be", "pcm_f32le", "pcm_f32be", "pcm_f64le", "pcm_f64be",
                           "pcm_u8", "pcm_s8", "pcm_alaw", "pcm_mulaw", "adpcm_ima_qt"}
_TEXT_SUBTITLES = {"subrip", "ass", "ssa", "mov_text", "webvtt", "text"}


@dataclass(frozen=True)
class Container:
    """An output container: the streams it takes as they are and what becomes of others."""

    audio: frozenset[str] | None  # None: any codec
    subtitle_codec: str  # "copy" or the codec text subtitles are converted to
    subtitles: frozenset[str] | None
    attachments: bool
    audio_fallback: str | None = None  # codec audio it cannot hold is encoded to


CONTAINERS = {
    ".mkv": Container(None, "copy", None, True),
    ".mp4": Container(frozenset(_MP4_AUDIO), "mov_text", frozenset(_TEXT_SUBTITLES), False),
    ".m4v": Container(frozenset(_MP4_AUDIO), "mov_text", frozenset(_TEXT_SUBTITLES), False),
    ".mov": Container(frozenset(_MOV_AUDIO), "mov_text", frozenset(_TEXT_SUBTITLES), False),
    ".webm": Container(frozenset({"opus", "vorbis"}), "webvtt", frozenset(_TEXT_SUBTITLES),
                       False, audio_fallback="libopus"),
}


def not_carried(stream: Stream) -> str:
    """The warning for a video stream the output does not get (only the first video is
    upscaled; cover art is not carried)."""
    if stream.cover:
        return (f"the cover art (stream {stream.index}, {stream.codec}) is not carried into "
                "the output; dropped")
    return (f"video stream {stream.index} ({stream.codec}) is not carried: only the first "
            "video is upscaled; dropped")


def stream_maps(streams: list[Stream], output: Path, input_index: int = 1,
                refused: frozenset[str] = frozenset()) -> tuple[list[str], list[str]]:
    """(ffmpeg options, warnings) carrying the input's audio, subtitles, attachments,
    chapters, metadata and per-stream tags into ``output``; streams its container cannot
    hold are dropped with a warning (or, in .webm, audio is encoded to Opus). ``refused``:
    codecs the container's muxer refused (see :func:`refused_by_muxer`), dropped too."""
    container = CONTAINERS[output.suffix.lower()]
    args: list[str] = ["-map_metadata", str(input_index), "-map_chapters", str(input_index)]
    warnings = []
    codecs: list[str] = []
    out_index = 1  # the video from the pipe is output stream 0
    for stream in streams:
        if stream.kind not in ("audio", "subtitle", "attachment"):
            continue  # the video comes from the pipe; data streams are not carried
        allowed = {"audio": container.audio, "subtitle": container.subtitles,
                   "attachment": None if container.attachments else frozenset()}[stream.kind]
        fits = (allowed is None or stream.codec in allowed) and stream.codec not in refused
        if stream.kind == "audio" and not fits and container.audio_fallback:
            codecs += [f"-c:{out_index}", container.audio_fallback]
            warnings.append(f"audio stream {stream.index} ({stream.codec}) is encoded to "
                            f"Opus: {output.suffix} holds only Opus or Vorbis audio")
        elif not fits:
            warnings.append(f"{stream.kind} stream {stream.index} ({stream.codec}) cannot go "
                            f"into {output.suffix}; dropped (use .mkv to keep it)")
            continue
        elif stream.kind == "subtitle":
            codecs += [f"-c:{out_index}", container.subtitle_codec]
        else:
            codecs += [f"-c:{out_index}", "copy"]
        args += ["-map", f"{input_index}:{stream.index}"]  # its tags come along
        out_index += 1
    return args + codecs, warnings


def refused_by_muxer(ffmpeg: str, source: Path, streams: list[Stream], output: Path
                     ) -> frozenset[str]:
    """The codecs among the streams :func:`stream_maps` carries into ``output`` that
    ffmpeg's muxer for its suffix refuses (mov takes no Opus or FLAC, the ipod muxer of
    .m4v no MP3 or E-AC-3, ...): each codec is muxed for an instant into a scratch file,
    so they are known before any work, not at the end."""
    import subprocess
    import tempfile

    refused: set[str] = set()
    tried: set[tuple[str, str]] = set()
    with tempfile.TemporaryDirectory(prefix="vs-coreml-esrgan-") as work:
        scratch = Path(work) / f"probe{output.suffix.lower()}"
        for stream in streams:
            args, _ = stream_maps([stream], output)
            if (stream.kind, stream.codec) in tried or "-c:1" not in args:
                continue  # already known, or not carried at all
            tried.add((stream.kind, stream.codec))
            codec = args[args.index("-c:1") + 1]
            # the input's first second at most: the muxer refuses at its header, and a
            # track whose first packet comes late must not make it read the whole file
            result = subprocess.run(
                [ffmpeg, "-v", "error", "-nostdin", "-y", "-t", "1", "-i", str(source),
                 "-map", f"0:{stream.index}", "-c:0", codec, "-t", "0.1", str(scratch)],
                capture_output=True)
            if result.returncode != 0:
                refused.add(stream.codec)
    return frozenset(refused)
