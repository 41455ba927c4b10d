"""Running a job: ``vspipe -c y4m script.vpy - | ffmpeg ...`` as two processes, with a
progress bar, an atomic output and optional resumable segments."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

from .media import JobError, Stream, probe_media, stream_maps
from .plan import Job
from .relay import command as relay_command

Warn = Callable[[str], None]


class Interrupted(BaseException):
    """SIGTERM or SIGHUP arrived: handled like Ctrl-C (a BaseException, so cleanup code
    that catches Exception does not swallow it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into :class:`Interrupted` while the job runs (main thread
    only). A SIGHUP that was ignored when we started (``nohup``) stays ignored."""
    def handler(signum: int, _frame) -> None:
        raise Interrupted(signum)

    previous = {}
    for number in (signal.SIGTERM, signal.SIGHUP):
        if number == signal.SIGHUP and signal.getsignal(number) is signal.SIG_IGN:
            continue
        previous[number] = signal.signal(number, handler)
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


def vspipe_environment(threads: int | None = None) -> dict[str, str]:
    """The environment vspipe runs in: VSScript configures itself by running
    ``vapoursynth config`` from PATH, so this Python's scripts directory comes first.
    ``threads``: the compute threads its backend may use (a cluster worker's share of the
    machine; Dask's nanny sets 1 for the processes it starts)."""
    env = dict(os.environ)
    scripts = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([scripts, env.get("PATH", "")])
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def seconds(value: Fraction) -> str:
    return f"{float(value):.6f}"


@dataclass(frozen=True)
class Companion:
    """Where the non-video streams come from (the source, or for a frame range a cut of
    it), and where the video's first frame sits on that file's timeline, in seconds from
    its start (negative: before it)."""

    path: Path
    streams: list[Stream]
    video_offset: Fraction

    def maps(self, output: Path) -> list[str]:
        return stream_maps(self.streams, output)[0]

    def input(self) -> list[str]:
        """ffmpeg's options reading the file; when the video starts before its streams,
        they are moved later instead (keeping the video at 0)."""
        shift = ["-itsoffset", seconds(-self.video_offset)] if self.video_offset < 0 else []
        return [*shift, "-i", str(self.path)]


def encode_args(job: Job, offset: Fraction) -> list[str]:
    """The video's ffmpeg options, placing its first frame ``offset`` seconds in (when
    positive). The shift is made in a fine time base: ``-itsoffset`` on the pipe would be
    rounded to whole frames (the y4m demuxer counts time in frames). A variable-rate video
    is placed by :func:`pipe_input`."""
    if offset <= 0 or job.variable_rate:
        return job.video_args
    fps = job.info.fps
    tick = Fraction(fps.denominator, fps.numerator * 1000)  # frames stay on exact ticks
    base = f"{tick.numerator}/{tick.denominator}"
    return ["-vf", f"settb={base},setpts=PTS+{seconds(offset)}/TB,{job.filters}",
            "-fps_mode", "vfr", "-enc_time_base:v", base, *job.codec_args]


def _carried(job: Job) -> list[Stream]:
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
    carried = _carried(job)
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


def pipe_input(job: Job, delay: Fraction = Fraction(0)) -> list[str]:
    """ffmpeg's input: y4m from vspipe, or NUT from the timestamp relay, placed ``delay``
    seconds in (exact there: NUT carries the source's time base; a constant-rate video
    is placed by :func:`encode_args`)."""
    if not job.variable_rate:
        return ["-f", "yuv4mpegpipe", "-i", "-"]
    shift = ["-itsoffset", seconds(delay)] if delay > 0 else []
    return [*shift, "-f", "nut", "-i", "-"]


def vspipe_command(job: Job, script: str, first: int, last: int, index: str | None,
                   progress: bool) -> list[str]:
    args = ["-a", f"index={index}"] if index and job.info.namespace == "builtin" else []
    return [job.vspipe, "-c", "y4m", *(["-p"] if progress else []), *args,
            "-s", str(first), "-e", str(last), script, "-"]


def describe(job: Job, script_path: str = "upscale.vpy") -> str:
    """The script and the exact shell commands a straight (unchunked) run executes."""
    out = job.request.output
    if job.is_range:  # the cut holds audio, then subtitles, then attachments
        kinds = ("audio", "subtitle", "attachment")
        ordered = sorted(_carried(job), key=lambda s: kinds.index(s.kind))
        comp = Companion(Path("streams.mkv"), [replace(s, index=i)
                                               for i, s in enumerate(ordered)], Fraction(0))
        cut = f"{shlex.join(cut_command(job, comp.path))}\n"
    else:
        comp, cut = Companion(job.request.source, job.media.streams, job.video_start()), ""
    vspipe = vspipe_command(job, script_path, job.first, job.last, None, False)
    ffmpeg = [job.ffmpeg, "-hide_banner", "-nostdin", *pipe_input(job, comp.video_offset),
              *comp.input(),
              "-map", "0:v", *comp.maps(out), *encode_args(job, comp.video_offset),
              str(out)]
    stages = [vspipe, ffmpeg]
    note = ""
    if job.variable_rate:
        stages.insert(1, relay_command(job.request.source.resolve(), job.first, job.last))
        note = ("# variable frame rate: the relay stamps each frame with its time in the "
                "source\n")
    return (f"# {script_path}\n{job.script}\n# pipeline\n{note}{cut}"
            + " \\\n  | ".join(shlex.join(stage) for stage in stages) + "\n")


class _Progress:
    """Reads vspipe's ``-p`` output, drives a tqdm bar, keeps the rest for errors."""

    _FRAME = re.compile(rb"Frame: (\d+)/(\d+)(?: \([^)]*\))?")
    # vspipe's own progress and timing lines: not part of an error message
    _CHATTER = re.compile(rb"^(Script evaluation done in|Output \d+ frames in|"
                          rb"Information: .* index progress)")

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
        if line.strip() and not self._CHATTER.match(line.strip()):
            self.text += line + b"\n"


def pipe(job: Job, script: Path, first: int, last: int, ffmpeg_tail: list[str], bar,
         delay: Fraction = Fraction(0), *, cancelled: Callable[[], bool] | None = None,
         threads: int | None = None) -> int:
    """Run ``vspipe -s first -e last | ffmpeg ... ffmpeg_tail`` (with the timestamp relay
    between them for a variable-rate video, placed ``delay`` seconds in); returns
    frames written. On failure or interruption every process is stopped and JobError is
    raised (or the interruption re-raised). ``cancelled``, asked about once a second,
    stops them too (a cluster's task: a worker thread cannot be interrupted from outside);
    ``threads``: see :func:`vspipe_environment`."""
    index = script.with_name("index.json")
    stages = [("vspipe", vspipe_command(job, str(script), first, last, str(index), True),
               vspipe_environment(threads))]
    if job.variable_rate:
        stages.append(("the timestamp relay", relay_command(index, first, last), None))
    stages.append(("ffmpeg", [job.ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin",
                              "-y", *pipe_input(job, delay), *ffmpeg_tail], None))
    processes = _start_chain([(command, env) for _, command, env in stages])
    progress = _Progress(bar)
    readers = [threading.Thread(target=progress.pump, args=(processes[0].stderr,),
                                daemon=True)]
    errors: list[list[bytes]] = [[] for _ in processes]
    for process, collected in zip(processes[1:], errors[1:], strict=True):
        readers.append(threading.Thread(
            target=lambda p=process, c=collected: c.append(p.stderr.read()), daemon=True))
    for reader in readers:
        reader.start()
    try:
        statuses = _wait_all(processes, cancelled)
    except BaseException:
        _stop(*processes)
        raise
    for reader in readers:
        reader.join()
    # When one process fails the others usually fail as a consequence (a closed pipe, a
    # truncated stream), so every message is shown.
    errors[0] = [bytes(progress.text)]
    failures = [f"{name} failed (exit {status}):\n"
                f"{b''.join(text).decode(errors='replace').strip()[-4000:]}"
                for (name, _, _), status, text in zip(stages, statuses, errors, strict=True)
                if status != 0]
    if failures:
        raise JobError("\n".join(failures))
    return last - first + 1


def _wait_all(processes: list[subprocess.Popen], cancelled: Callable[[], bool] | None
              ) -> list[int]:
    """Each process's exit status, the last first (it ends when its input does); JobError
    when ``cancelled`` says so meanwhile (the caller stops them)."""
    while cancelled is not None:
        try:
            processes[-1].wait(timeout=1)
            break
        except subprocess.TimeoutExpired:
            if cancelled():
                raise JobError("cancelled") from None
    return [process.wait() for process in reversed(processes)][::-1]


def _start_chain(stages: list[tuple[list[str], dict[str, str] | None]]
                 ) -> list[subprocess.Popen]:
    """Start each command reading the previous one's output; the last writes nowhere.
    Each one's stderr is a pipe. If one cannot start, those started are stopped."""
    processes: list[subprocess.Popen] = []
    try:
        for position, (command, env) in enumerate(stages):
            last = position == len(stages) - 1
            processes.append(subprocess.Popen(
                command, stdin=processes[-1].stdout if processes else None,
                stdout=None if last else subprocess.PIPE, stderr=subprocess.PIPE, env=env))
            if position:
                # the next process holds the pipe now; its writer sees it close if it dies
                processes[-2].stdout.close()
    except BaseException:
        _stop(*processes)
        if processes and processes[-1].stdout is not None:
            processes[-1].stdout.close()
        raise
    return processes


def _stop(*processes: subprocess.Popen) -> None:
    """Terminate, then kill what is still running after 10 s; never leaves one behind."""
    for process in processes:
        with contextlib.suppress(OSError):
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_job(job: Job, *, warn: Warn, show_progress: bool = True, bar=None
            ) -> tuple[int, int]:
    """Run a planned job. Returns (frames processed now, segments reused).

    Nothing appears at the output path unless the whole job succeeded; with chunks,
    finished segments are kept beside the output so a rerun resumes. ``bar``: a tqdm bar
    to advance instead of the job's own (a batch's bar over all its files).
    """
    from .segments import run_chunked

    for message in job.warnings:
        warn(message)
    if job.request.force and job.request.output.exists():
        warn(f"{job.request.output} will be replaced when the job succeeds")
    with tempfile.TemporaryDirectory(prefix="vs-coreml-esrgan-") as work:
        script = Path(work) / "upscale.vpy"
        script.write_text(job.script)
        job.index.save(Path(work) / "index.json")
        own = _bar(job, show_progress) if bar is None else contextlib.nullcontext(bar)
        with own as bar:
            if job.request.chunks == 1:
                return _run_straight(job, script, bar), 0
            return run_chunked(job, script, bar, warn)


def _bar(job: Job, show: bool):
    from tqdm import tqdm

    return tqdm(total=job.frames, unit="frame", desc="upscaling", dynamic_ncols=True,
                disable=None if show else True, smoothing=0.1, leave=False)


def _run_straight(job: Job, script: Path, bar) -> int:
    output = job.request.output
    partial = partial_path(output)
    comp = companion(job, script.parent)
    tail = [*comp.input(), "-map", "0:v", *comp.maps(output),
            *encode_args(job, comp.video_offset), str(partial)]
    try:
        frames = pipe(job, script, job.first, job.last, tail, bar,
                      max(comp.video_offset, Fraction(0)))
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)
    return frames
