"""Running a job: ``vspipe -c y4m script.vpy - | ffmpeg ...`` as two processes, with a
progress bar, an atomic output and optional resumable segments."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

from .media import (
    CONTAINERS,
    JobError,
    SourceInfo,
    Stream,
    find_ffmpeg,
    probe_source,
    probe_streams,
    source_filters,
    stream_maps,
    video_filter,
)
from .script import ENCODERS, PRESET_ENCODERS, UpscaleOptions, render_script

Warn = Callable[[str], None]


@dataclass(frozen=True)
class JobRequest:
    source: Path
    output: Path
    upscale: UpscaleOptions
    encoder: str = "x264"
    crf: int | None = None
    preset: str | None = None
    bits: int | None = None  # None: 8, or the encoder's only depth (prores: 10)
    start: int | None = None
    end: int | None = None  # inclusive
    chunks: int = 1
    force: bool = False


@dataclass(frozen=True)
class Job:
    request: JobRequest
    ffmpeg: str
    vspipe: str
    info: SourceInfo
    streams: list[Stream]
    script: str
    first: int
    last: int
    video_args: list[str]
    warnings: list[str] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return self.last - self.first + 1


def plan_job(request: JobRequest) -> Job:
    """Check everything a job needs before any work starts. Raises JobError."""
    source, output = request.source, request.output
    if not source.is_file():
        raise JobError(f"input {source} does not exist")
    if output.suffix.lower() not in CONTAINERS:
        raise JobError(f"output must end in {', '.join(CONTAINERS)}; got {output.name}")
    if output.exists() and not request.force:
        raise JobError(f"{output} exists; pass --force to replace it")
    if output.resolve() == source.resolve():
        raise JobError("output and input are the same file")
    encoder = ENCODERS.get(request.encoder)
    if encoder is None:
        raise JobError(f"encoder must be one of {', '.join(ENCODERS)}, got {request.encoder}")
    bits = request.bits or min(encoder.formats)
    if bits not in encoder.formats:
        raise JobError(f"encoder {request.encoder} takes bit depth "
                       f"{' or '.join(map(str, encoder.formats))}, not {bits}")
    if request.chunks < 1:
        raise JobError(f"--chunks must be at least 1, got {request.chunks}")
    _check_model(request.upscale.model)
    ffmpeg = find_ffmpeg()
    vspipe = _find_vspipe()
    streams = probe_streams(ffmpeg, source)
    namespaces = source_filters()
    if not namespaces:
        raise JobError("no VapourSynth source filter is installed: pip install "
                       "vapoursynth-bestsource (or install ffms2 or lsmas)")
    info = probe_source(namespaces[0], source.resolve())
    first = request.start or 0
    last = info.num_frames - 1 if request.end is None else request.end
    if not 0 <= first <= last < info.num_frames:
        raise JobError(f"frame range {first}-{last} is outside the input's 0-"
                       f"{info.num_frames - 1}")
    script = render_script(source.resolve(), namespaces[0], request.upscale,
                           encoder.formats[bits])
    video = ["-vf", video_filter(info), "-c:v", encoder.codec, *encoder.extra]
    crf = request.crf if request.crf is not None else encoder.default_crf
    if crf is not None:
        video += [*encoder.quality, str(crf)]
    elif request.crf is not None:
        raise JobError(f"encoder {request.encoder} has no --crf")
    if request.preset:
        if request.encoder not in PRESET_ENCODERS:
            raise JobError(f"encoder {request.encoder} has no --preset")
        video += ["-preset", request.preset]
    _, warnings = stream_maps(streams, output)
    return Job(request, ffmpeg, vspipe, info, streams, script, first, last, video, warnings)


def _check_model(model: str | None) -> None:
    from ..catalogue import DEFAULT_MODEL, is_model_name, resolve_model
    from ..network_spec import ModelError

    try:
        if model is None or is_model_name(model):
            resolve_model(model or DEFAULT_MODEL)
        elif not Path(model).exists():
            raise JobError(f"model {model} does not exist")
    except ModelError as exc:
        raise JobError(str(exc)) from None


def _find_vspipe() -> str:
    beside = Path(sys.executable).parent / "vspipe"
    found = str(beside) if beside.is_file() else shutil.which("vspipe")
    if not found:
        raise JobError("vspipe not found: pip install vapoursynth (it brings vspipe)")
    return found


def _time(frame: int, fps: Fraction) -> str:
    return f"{float(frame / fps):.6f}"


@dataclass(frozen=True)
class _Companion:
    """Where the non-video streams come from: the source, or for a frame range, a cut of
    its audio, subtitles and attachments (``-ss``/``-t`` as output options: as input
    options with stream copy, ffmpeg keeps pre-roll packets that Matroska then shifts to
    the start, desynchronising the audio)."""

    path: Path
    streams: list[Stream]

    def maps(self, output: Path) -> list[str]:
        return stream_maps(self.streams, output)[0]


def _is_range(job: Job) -> bool:
    return job.first > 0 or job.last < job.info.num_frames - 1


def _cut_command(job: Job, target: Path) -> list[str]:
    return [job.ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
            "-i", str(job.request.source), "-map", "0:a?", "-map", "0:s?", "-map", "0:t?",
            "-c", "copy", "-ss", _time(job.first, job.info.fps),
            "-t", _time(job.frames, job.info.fps), str(target)]


def _companion(job: Job, work: Path) -> _Companion:
    carried = [s for s in job.streams if s.kind in ("audio", "subtitle", "attachment")]
    if not _is_range(job) or not carried:
        return _Companion(job.request.source, carried)
    target = work / "streams.mkv"
    result = subprocess.run(_cut_command(job, target), capture_output=True, text=True,
                            errors="replace")
    if result.returncode != 0:
        raise JobError(f"ffmpeg could not cut the audio and subtitles to frames "
                       f"{job.first}-{job.last}:\n{result.stderr.strip()[-4000:]}")
    try:
        streams = probe_streams(job.ffmpeg, target, need_video=False)
    except JobError:
        streams = []
    return _Companion(target, streams)


def _partial(path: Path) -> Path:
    return path.with_name(f".{path.stem}.partial{path.suffix}")


def describe(job: Job, script_path: str = "upscale.vpy") -> str:
    """The script and the exact shell commands a straight (unchunked) run executes."""
    out = job.request.output
    if _is_range(job):  # the cut holds audio, then subtitles, then attachments
        kinds = ("audio", "subtitle", "attachment")
        ordered = sorted((s for s in job.streams if s.kind in kinds),
                         key=lambda s: kinds.index(s.kind))
        companion = _Companion(Path("streams.mkv"), [replace(s, index=i)
                                                     for i, s in enumerate(ordered)])
    else:
        companion = _Companion(job.request.source, job.streams)
    vspipe = [job.vspipe, "-c", "y4m", "-s", str(job.first), "-e", str(job.last),
              script_path, "-"]
    ffmpeg = [job.ffmpeg, "-hide_banner", "-nostdin", "-f", "yuv4mpegpipe", "-i", "-",
              "-i", str(companion.path), "-map", "0:v", *companion.maps(out),
              *job.video_args, str(out)]
    cut = (f"{shlex.join(_cut_command(job, companion.path))}\n" if _is_range(job) else "")
    return (f"# {script_path}\n{job.script}\n# pipeline\n{cut}{shlex.join(vspipe)} \\\n  | "
            f"{shlex.join(ffmpeg)}\n")


class _Progress:
    """Reads vspipe's ``-p`` output, drives a tqdm bar, keeps the rest for errors."""

    _FRAME = re.compile(rb"Frame: (\d+)/(\d+)")

    def __init__(self, bar) -> None:
        self.bar = bar
        self.text = bytearray()
        self.done = 0

    def pump(self, stream) -> None:
        pending = b""
        while chunk := stream.read1(4096) if hasattr(stream, "read1") else stream.read(4096):
            pending += chunk
            *complete, pending = re.split(rb"[\r\n]", pending)
            for line in complete:
                self._line(line)
        self._line(pending)

    def _line(self, line: bytes) -> None:
        frames = self._FRAME.findall(line)
        if frames:
            done = int(frames[-1][0])
            if self.bar is not None and done > self.done:
                self.bar.update(done - self.done)
            self.done = max(self.done, done)
            line = self._FRAME.sub(b"", line)
        if line.strip():
            self.text += line + b"\n"


def _pipe(job: Job, script: Path, first: int, last: int, ffmpeg_tail: list[str],
          bar) -> int:
    """Run ``vspipe -s first -e last | ffmpeg ... ffmpeg_tail``; returns frames written.
    On failure or interruption both processes are stopped and JobError is raised."""
    vspipe_cmd = [job.vspipe, "-c", "y4m", "-p", "-s", str(first), "-e", str(last),
                  str(script), "-"]
    ffmpeg_cmd = [job.ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
                  "-f", "yuv4mpegpipe", "-i", "-", *ffmpeg_tail]
    vspipe = subprocess.Popen(vspipe_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ffmpeg = subprocess.Popen(ffmpeg_cmd, stdin=vspipe.stdout, stderr=subprocess.PIPE)
    except OSError:
        vspipe.kill()
        raise
    vspipe.stdout.close()  # ffmpeg holds the pipe now; vspipe sees it close if ffmpeg dies
    progress = _Progress(bar)
    reader = threading.Thread(target=progress.pump, args=(vspipe.stderr,), daemon=True)
    reader.start()
    ffmpeg_errors: list[bytes] = []
    ffmpeg_reader = threading.Thread(target=lambda: ffmpeg_errors.append(ffmpeg.stderr.read()),
                                     daemon=True)
    ffmpeg_reader.start()
    try:
        ffmpeg_status = ffmpeg.wait()
        vspipe_status = vspipe.wait()
    except BaseException:
        for process in (vspipe, ffmpeg):
            process.terminate()
        for process in (vspipe, ffmpeg):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        raise
    reader.join()
    ffmpeg_reader.join()
    # When one process fails the other usually fails as a consequence (a closed pipe, a
    # truncated stream), so both messages are shown.
    failures = []
    if vspipe_status != 0:
        detail = progress.text.decode(errors="replace").strip()
        failures.append(f"vspipe failed (exit {vspipe_status}):\n{detail[-4000:]}")
    if ffmpeg_status != 0:
        detail = b"".join(ffmpeg_errors).decode(errors="replace").strip()
        failures.append(f"ffmpeg failed (exit {ffmpeg_status}):\n{detail[-4000:]}")
    if failures:
        raise JobError("\n".join(failures))
    return last - first + 1


def run_job(job: Job, *, warn: Warn, show_progress: bool = True) -> tuple[int, int]:
    """Run a planned job. Returns (frames processed now, segments reused).

    Nothing appears at the output path unless the whole job succeeded; with chunks,
    finished segments are kept beside the output so a rerun resumes.
    """
    for message in job.warnings:
        warn(message)
    if job.request.force and job.request.output.exists():
        warn(f"{job.request.output} will be replaced when the job succeeds")
    with tempfile.TemporaryDirectory(prefix="vs-coreml-esrgan-") as work:
        script = Path(work) / "upscale.vpy"
        script.write_text(job.script)
        with _bar(job, show_progress) as bar:
            if job.request.chunks == 1:
                return _run_straight(job, script, bar), 0
            return _run_chunked(job, script, bar, warn)


def _bar(job: Job, show: bool):
    from tqdm import tqdm

    return tqdm(total=job.frames, unit="frame", desc="upscaling", dynamic_ncols=True,
                disable=None if show else True, smoothing=0.1)


def _run_straight(job: Job, script: Path, bar) -> int:
    output = job.request.output
    partial = _partial(output)
    companion = _companion(job, script.parent)
    tail = ["-i", str(companion.path), "-map", "0:v", *companion.maps(output),
            *job.video_args, str(partial)]
    try:
        frames = _pipe(job, script, job.first, job.last, tail, bar)
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)
    return frames


def segments(first: int, last: int, chunks: int) -> list[tuple[int, int]]:
    """Split [first, last] into ``chunks`` contiguous, non-empty, in-order ranges."""
    total = last - first + 1
    chunks = min(chunks, total)
    bounds = [first + round(k * total / chunks) for k in range(chunks + 1)]
    return [(bounds[k], bounds[k + 1] - 1) for k in range(chunks)]


def _run_chunked(job: Job, script: Path, bar, warn: Warn) -> tuple[int, int]:
    output = job.request.output
    parts = output.with_name(f".{output.name}.parts")
    ranges = segments(job.first, job.last, job.request.chunks)
    manifest = {"source": str(job.request.source.resolve()),
                "source_size": job.request.source.stat().st_size,
                "script": job.script, "video": job.video_args, "segments": ranges}
    recorded = parts / "job.json"
    if parts.is_dir():
        try:
            same = json.loads(recorded.read_text()) == json.loads(json.dumps(manifest))
        except (OSError, ValueError):
            same = False
        if not same:
            if not job.request.force:
                raise JobError(f"{parts} holds segments of a different job; rerun with the "
                               "same options, or pass --force to start over")
            shutil.rmtree(parts)
    parts.mkdir(exist_ok=True)
    recorded.write_text(json.dumps(manifest))
    processed = reused = 0
    files = []
    for index, (first, last) in enumerate(ranges):
        segment = parts / f"{index:05d}.mkv"
        files.append(segment)
        if segment.is_file():
            reused += 1
            if bar is not None:
                bar.update(last - first + 1)
            continue
        partial = _partial(segment)
        try:
            processed += _pipe(job, script, first, last, ["-map", "0:v", *job.video_args,
                                                          str(partial)], bar)
            os.replace(partial, segment)
        finally:
            partial.unlink(missing_ok=True)
    if reused:
        warn(f"resumed: {reused} of {len(ranges)} segments were already done")
    _join(job, files, parts, _companion(job, script.parent))
    shutil.rmtree(parts, ignore_errors=True)
    return processed, reused


def _join(job: Job, files: list[Path], parts: Path, companion: _Companion) -> None:
    """Concatenate segments losslessly and add the source's other streams."""
    listing = parts / "segments.txt"
    listing.write_text("".join(f"file '{f.resolve()}'\n" for f in files))
    output = job.request.output
    partial = _partial(output)
    command = [job.ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
               "-f", "concat", "-safe", "0", "-i", str(listing), "-i", str(companion.path),
               "-map", "0:v", *companion.maps(output), "-c:v", "copy", str(partial)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, errors="replace")
        if result.returncode != 0:
            raise JobError(f"ffmpeg could not join the segments (exit {result.returncode}):\n"
                           f"{result.stderr.strip()[-4000:]}")
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)
