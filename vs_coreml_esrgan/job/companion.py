"""The streams that travel beside the upscaled video (audio, subtitles, attachments):
where ffmpeg reads them from, how the video is placed among them, and the partial output
name a run writes before its atomic rename."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from .media import JobError, Stream, probe_media, stream_maps
from .pipe import seconds
from .plan import Job


@dataclass(frozen=True)
class Companion:
    """Where the non-video streams come from (the source, or for a frame range a cut of
    it), and where the video's first frame sits on that file's timeline, in seconds from
    its start (negative: before it)."""

    path: Path
    streams: list[Stream]
    video_offset: Fraction

    def maps(self, output: Path, refused: frozenset[str] = frozenset()) -> list[str]:
        """``refused``: the codecs the output's muxer refused (the job's plan found them)."""
        return stream_maps(self.streams, output, refused=refused)[0]

    def input(self) -> list[str]:
        """ffmpeg's options reading the file; when the video starts before its streams,
        they are moved later instead (keeping the video at 0)."""
        shift = ["-itsoffset", seconds(-self.video_offset)] if self.video_offset < 0 else []
        return [*shift, "-i", str(self.path)]


def encode_args(job: Job, offset: Fraction) -> list[str]:
    """The video's ffmpeg options, placing its first frame ``offset`` seconds in (when
    positive). The shift is made in a fine time base: ``-itsoffset`` on the pipe would be
    rounded to whole frames (the y4m demuxer counts time in frames). A variable-rate video
    is placed by :func:`.pipe.pipe_input`."""
    if offset <= 0 or job.variable_rate:
        return job.video_args
    fps = job.info.fps
    tick = Fraction(fps.denominator, fps.numerator * 1000)  # frames stay on exact ticks
    base = f"{tick.numerator}/{tick.denominator}"
    return ["-vf", f"settb={base},setpts=PTS+{seconds(offset)}/TB,{job.filters}",
            "-fps_mode", "vfr", "-enc_time_base:v", base, *job.codec_args]


def carried_streams(job: Job) -> list[Stream]:
    return [s for s in job.media.streams if s.kind in ("audio", "subtitle", "attachment")]


def cut_command(job: Job, target: Path) -> list[str]:
    """Cut the audio, subtitles and attachments to the frame range (``-ss``/``-t`` as output
    options: as input options with stream copy, ffmpeg keeps pre-roll packets that
    Matroska then shifts to the start, desynchronising the audio)."""
    length = job.index.seconds(job.last + 1) - job.index.seconds(job.first)
    return [job.ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
            "-i", str(job.request.source), "-map", "0:a?", "-map", "0:s?", "-map", "0:t?",
            "-c", "copy", "-ss", seconds(job.video_start()), "-t", seconds(length),
            str(target)]


def companion(job: Job, work: Path) -> Companion:
    carried = carried_streams(job)
    if not job.is_range or not carried:
        return Companion(job.request.source, carried, job.video_start())
    target = work / "streams.mkv"
    result = subprocess.run(cut_command(job, target), capture_output=True, text=True,
                            errors="replace")
    if result.returncode != 0:
        raise JobError(f"ffmpeg could not cut the audio and subtitles to frames "
                       f"{job.first}-{job.last}:\n{result.stderr.strip()[-4000:]}")
    try:
        cut = probe_media(target, need_video=False)
    except JobError:
        return Companion(target, [], Fraction(0))
    # The cut starts at the first frame's time; its own first packet may start a little
    # later, and ffmpeg measures the file from there.
    return Companion(target, cut.streams, -cut.start)


def partial_path(path: Path) -> Path:
    return path.with_name(f".{path.stem}.partial{path.suffix}")
