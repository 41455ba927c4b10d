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


def cut_command(job: Job, target: Path, kinds: tuple[str, ...] = ("a", "s", "t")
                ) -> list[str]:
    """Cut the audio, subtitles and attachments (``kinds``: ffmpeg's stream letters) to
    the frame range (``-ss``/``-t`` as output options: as input options with stream copy,
    ffmpeg keeps pre-roll packets that Matroska then shifts to the start, desynchronising
    the audio). Subtitles on screen at the start are lost this way: see
    :func:`cut_subtitles`."""
    length = job.index.seconds(job.last + 1) - job.index.seconds(job.first)
    maps = [item for kind in kinds for item in ("-map", f"0:{kind}?")]
    return [job.ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
            "-i", str(job.request.source), *maps,
            "-c", "copy", "-ss", seconds(job.video_start()), "-t", seconds(length),
            str(target)]


def cut_subtitles(job: Job, target: Path) -> None:
    """The source's subtitle tracks cut to the frame range, into Matroska at ``target``,
    measured from the range's start: an event on screen there (begun before it) is kept,
    shortened to the range (ffmpeg's cut drops it). Packets are copied as they are; only
    their times change (an event without a duration is kept when it starts inside)."""
    import av

    from .video_index import open_media

    start = job.video_start()
    stop = start + job.index.seconds(job.last + 1) - job.index.seconds(job.first)
    with open_media(job.request.source) as source, \
            av.open(str(target), "w", format="matroska") as cut:
        origin = Fraction(source.start_time or 0, 1_000_000)  # ffmpeg's -ss counts from it
        tracks = [s for s in source.streams if s.type == "subtitle"]
        made = {}
        for track in tracks:
            made[track.index] = cut.add_stream_from_template(track)
            made[track.index].metadata.update({k: v for k, v in track.metadata.items()
                                               if k.upper() != "DURATION"})
            made[track.index].disposition = track.disposition  # default, forced, ...
        for packet in source.demux():
            if packet.pts is None:
                continue
            base = packet.time_base
            begin = packet.pts * base - origin
            if packet.stream.index not in made or not packet.size:
                if begin > stop + _INTERLEAVE:  # the file is read as far as needed only
                    break
                continue
            end = begin + (packet.duration or 0) * base
            if begin >= stop or (end <= start if end > begin else begin < start):
                continue
            shown_from, shown_to = max(begin, start), min(end, stop)
            packet.pts = packet.dts = round((shown_from - start) / base)
            if end > begin:
                packet.duration = round((shown_to - shown_from) / base)
            packet.stream = made[packet.stream.index]
            cut.mux(packet)


# How far apart in time a file's streams may be stored: packets are interleaved by time,
# so past the range's end by this much no subtitle event of the range can come.
_INTERLEAVE = Fraction(10)


def companion(job: Job, work: Path) -> Companion:
    carried = carried_streams(job)
    if not job.is_range or not carried:
        return Companion(job.request.source, carried, job.video_start())
    target = work / "streams.mkv"
    others = tuple(k for k, kind in (("a", "audio"), ("t", "attachment"))
                   if any(s.kind == kind for s in carried))
    subtitles = any(s.kind == "subtitle" for s in carried)
    cut_to = work / "cut.mkv" if subtitles else target
    _ffmpeg(cut_command(job, cut_to, others) if others else None,
            f"cut the audio to frames {job.first}-{job.last}")
    if subtitles:
        cut_subtitles(job, work / "subtitles.mkv")
        # -copyts: each file keeps its own times (the audio's may start a little after
        # the range); the subtitles come after the audio, as in a straight run.
        inputs = (["-i", str(cut_to)] if others else []) + \
            ["-i", str(work / "subtitles.mkv")]
        own = "1" if others else "0"
        maps = (["-map", "0:a?"] if others else []) + ["-map", f"{own}:s"] + \
            (["-map", "0:t?"] if others else [])
        _ffmpeg([job.ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
                 "-copyts", *inputs, *maps, "-c", "copy", str(target)],
                f"join the cut subtitles to frames {job.first}-{job.last}'s audio")
    try:
        cut = probe_media(target, need_video=False)
    except JobError:
        return Companion(target, [], Fraction(0))
    # The cut starts at the first frame's time; its own first packet may start a little
    # later, and ffmpeg measures the file from there.
    return Companion(target, cut.streams, -cut.start)


def _ffmpeg(command: list[str] | None, what: str) -> None:
    if command is None:
        return
    result = subprocess.run(command, capture_output=True, text=True, errors="replace")
    if result.returncode != 0:
        raise JobError(f"ffmpeg could not {what}:\n{result.stderr.strip()[-4000:]}")


def settle_flags(job: Job, written: Path) -> None:
    """After muxing into ``written`` (the job's output, under another name): subtitle
    tracks the source had off stay off in MP4 / QuickTime (see :mod:`.mp4_tracks`)."""
    from .mp4_tracks import set_subtitle_tracks_enabled

    if job.request.output.suffix.lower() not in (".mp4", ".m4v", ".mov"):
        return
    maps, _ = stream_maps(job.media.streams, job.request.output,
                          refused=job.refused_codecs)
    kept = {maps[k + 1] for k, item in enumerate(maps[:-1]) if item == "-map"}
    enabled = [s.default for s in job.media.streams
               if s.kind == "subtitle" and f"1:{s.index}" in kept]
    set_subtitle_tracks_enabled(written, enabled)


def partial_path(path: Path) -> Path:
    return path.with_name(f".{path.stem}.partial{path.suffix}")
