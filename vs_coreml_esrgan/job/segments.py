"""Resumable jobs: the frame range encoded as segments kept beside the output, a manifest
that says which job made them, and a lossless join."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from .companion import Companion, companion, partial_path, settle_flags
from .media import JobError
from .pipe import pipe, seconds
from .plan import Job

Warn = Callable[[str], None]

CLUSTER_SEGMENT_FRAMES = 500


def segments(first: int, last: int, chunks: int) -> list[tuple[int, int]]:
    """Split [first, last] into ``chunks`` contiguous, non-empty, in-order ranges."""
    total = last - first + 1
    chunks = min(chunks, total)
    bounds = [first + round(k * total / chunks) for k in range(chunks + 1)]
    return [(bounds[k], bounds[k + 1] - 1) for k in range(chunks)]


def cluster_chunks(frames: int, per_segment: int = CLUSTER_SEGMENT_FRAMES) -> int:
    """Segments of about ``per_segment`` frames: the unit a cluster's worker takes, sends
    back whole and, when the worker is lost, computes again elsewhere."""
    return max(1, -(-frames // per_segment))


def manifest(job: Job) -> dict:
    """What makes segments reusable: the same source file, script, encoding, ranges and
    model weights (by content: a model file replaced at the same path is another model)."""
    source = job.request.source
    return {"source": str(source.resolve()), "source_size": source.stat().st_size,
            "source_mtime_ns": source.stat().st_mtime_ns, "script": job.script,
            "video": job.video_args, "model_sha256": job.model_digest,
            "segments": segments(job.first, job.last, job.request.chunks)}


def parts_dir(output: Path) -> Path:
    return output.with_name(f".{output.name}.parts")


def _check_resumable(parts: Path, wanted: dict, force: bool) -> None:
    """Raise JobError unless the segments in ``parts`` were made by the same job (with
    --force, they are removed instead)."""
    try:
        recorded = json.loads((parts / "job.json").read_text())
    except (OSError, ValueError):
        recorded = {}
    wanted = json.loads(json.dumps(wanted))  # tuples as lists, like the file
    if recorded == wanted:
        return
    if force:
        shutil.rmtree(parts)
        return
    differing = {k for k in wanted.keys() | recorded.keys()
                 if recorded.get(k) != wanted.get(k)}
    reasons = [why for keys, why in _CHANGES if differing & keys] if recorded else []
    if not reasons:
        raise JobError(f"{parts} holds segments of a different job; rerun with the same "
                       "options, or pass --force to start over")
    raise JobError(f"{parts} holds segments {' and '.join(reasons)}; pass --force to start "
                   "over" + (", or rerun with the options that made them"
                             if differing & _OPTIONS else ""))


_OPTIONS = {"script", "video", "segments"}
# What a manifest entry that differs means, for the message.
_CHANGES = (({"source", "source_size", "source_mtime_ns"},
             "of the source as it was: the file changed since (its size or modification "
             "time differs)"),
            ({"model_sha256"}, "made with other model weights (the model file changed "
                               "since)"),
            (_OPTIONS, "made with other options (model, tile, encoder, quality or frame "
                       "range)"))


@dataclass(frozen=True)
class Segment:
    """Frames ``first`` to ``last`` (inclusive) of a job, kept at ``path`` once encoded."""

    number: int
    first: int
    last: int
    path: Path

    @property
    def frames(self) -> int:
        return self.last - self.first + 1

    @property
    def done(self) -> bool:
        return self.path.is_file()


def open_parts(job: Job) -> list[Segment]:
    """The job's segments, in order, in the parts directory beside its output (created,
    with the manifest; segments of another job there raise JobError unless --force)."""
    parts = parts_dir(job.request.output)
    wanted = manifest(job)
    if parts.is_dir():
        _check_resumable(parts, wanted, job.request.force)
    parts.mkdir(exist_ok=True)
    (parts / "job.json").write_text(json.dumps(wanted))
    return [Segment(k, first, last, parts / f"{k:05d}.mkv")
            for k, (first, last) in enumerate(wanted["segments"])]


def encode_range(job: Job, script: Path, first: int, last: int, target: Path, bar,
                 cancelled: Callable[[], bool] | None = None, threads: int | None = None
                 ) -> int:
    """Encode frames ``first``-``last`` as video only into ``target``, atomically (a
    partial file beside it until ffmpeg is done). Returns the frames written.
    ``cancelled`` and ``threads``: see :func:`.pipe.pipe`."""
    partial = partial_path(target)
    try:
        frames = pipe(job, script, first, last, ["-map", "0:v", *job.video_args,
                                                 str(partial)], bar, cancelled=cancelled,
                      threads=threads)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return frames


def store_segment(segment: Segment, data: bytes) -> None:
    """Keep a segment encoded elsewhere (a cluster's worker), atomically."""
    partial = partial_path(segment.path)
    try:
        partial.write_bytes(data)
        os.replace(partial, segment.path)
    finally:
        partial.unlink(missing_ok=True)


def run_chunked(job: Job, script: Path, bar, warn: Warn) -> tuple[int, int]:
    all_segments = open_parts(job)
    processed = reused = 0
    for segment in all_segments:
        if segment.done:
            reused += 1
            if bar is not None:
                bar.update(segment.frames)
            continue
        processed += encode_range(job, script, segment.first, segment.last, segment.path,
                                  bar)
    if reused:
        warn(f"resumed: {reused} of {len(all_segments)} segments were already done")
    join_segments(job, all_segments, script.parent)
    return processed, reused


def join_segments(job: Job, all_segments: list[Segment], work: Path) -> None:
    """Join the finished segments into the output with the source's other streams, then
    remove the parts directory. ``work``: a scratch directory (a frame range's cut)."""
    parts = parts_dir(job.request.output)
    _join(job, all_segments, parts, companion(job, work))
    shutil.rmtree(parts, ignore_errors=True)


def concat_line(path: Path, length: Fraction | None = None, base: Path | None = None) -> str:
    """One ``file`` entry of ffmpeg's concat list (with its length in seconds, if given);
    quotes in the path are escaped the way the concat demuxer reads them (close, escaped
    quote, reopen). ``base``: the list's directory, where ``path`` lies: the entry is its
    bare name (the demuxer reads it relative to the list), so whatever the directory is
    called — a newline in it would end the line — never appears in the list."""
    name = path.name if base is not None and path.parent == base else str(path.resolve())
    quoted = name.replace("'", "'\\''")
    return f"file '{quoted}'\n" + ("" if length is None else
                                   f"duration {seconds(length)}\n")


def _join(job: Job, finished: list[Segment], parts: Path, comp: Companion) -> None:
    """Concatenate the finished segments (in frame order) losslessly and add the source's
    other streams."""
    listing = parts / "segments.txt"
    # A variable-rate segment's length is not its frame count over a rate: each file's
    # exact length places the next one (the concat demuxer's duration directive).
    listing.write_text("".join(
        concat_line(s.path, job.index.seconds(s.last + 1) - job.index.seconds(s.first)
                    if job.variable_rate else None, base=parts) for s in finished))
    output = job.request.output
    partial = partial_path(output)
    # The segments' 1 ms time base makes -itsoffset exact enough here.
    shift = ["-itsoffset", seconds(comp.video_offset)] if comp.video_offset > 0 else []
    command = [job.ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *shift,
               "-f", "concat", "-safe", "0", "-i", str(listing), *comp.input(),
               "-map", "0:v", *comp.maps(output, job.refused_codecs), "-c:v", "copy",
               *_video_tags(job), str(partial)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, errors="replace")
        if result.returncode != 0:
            raise JobError(f"ffmpeg could not join the segments (exit {result.returncode}):\n"
                           f"{result.stderr.strip()[-4000:]}")
        settle_flags(job, partial)
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)


def _video_tags(job: Job) -> list[str]:
    """The video track's language, title and flags options from the encoding options."""
    args = job.video_args
    return [item for k, key in enumerate(args[:-1])
            if key in ("-metadata:s:v:0", "-disposition:v:0") for item in (key, args[k + 1])]
