"""Running a job: ``vspipe -c y4m script.vpy - | ffmpeg ...`` as two processes, with a
progress bar, an atomic output and optional resumable segments."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
from collections.abc import Callable, Iterator
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

from .companion import (
    Companion,
    carried_streams,
    companion,
    cut_command,
    encode_args,
    partial_path,
    settle_flags,
)
from .pipe import pipe, pipe_input, vspipe_command
from .plan import Job
from .relay import command as relay_command
from .scratch import job_scratch
from .segments import run_chunked

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


def describe(job: Job, script_path: str = "upscale.vpy") -> str:
    """The script and the exact shell commands a straight (unchunked) run executes."""
    out = job.request.output
    if job.is_range:  # the cut holds audio, then subtitles, then attachments
        kinds = ("audio", "subtitle", "attachment")
        ordered = sorted(carried_streams(job), key=lambda s: kinds.index(s.kind))
        comp = Companion(Path("streams.mkv"), [replace(s, index=i)
                                               for i, s in enumerate(ordered)], Fraction(0))
        cut = f"{shlex.join(cut_command(job, comp.path))}\n"
        if any(s.kind == "subtitle" for s in ordered):
            cut = (f"{shlex.join(cut_command(job, Path('cut.mkv'), ('a', 't')))}\n# the "
                   "subtitles: cut in-process (events on screen at the start kept, "
                   "shortened), then joined with cut.mkv into streams.mkv\n")
    else:
        comp, cut = Companion(job.request.source, job.media.streams, job.video_start()), ""
    vspipe = vspipe_command(job, script_path, job.first, job.last, None, False)
    ffmpeg = [job.ffmpeg, "-hide_banner", "-nostdin", *pipe_input(job, comp.video_offset),
              *comp.input(), "-map", "0:v", *comp.maps(out, job.refused_codecs),
              *encode_args(job, comp.video_offset), str(out)]
    stages = [vspipe, ffmpeg]
    note = ""
    if job.variable_rate:
        stages.insert(1, relay_command(job.request.source.resolve(), job.first, job.last))
        note = ("# variable frame rate: the relay stamps each frame with its time in the "
                "source\n")
    encoder = f"# encoder {job.encoder.describe()}\n"
    return (f"# {script_path}\n{job.script}\n# pipeline\n{encoder}{note}{cut}"
            + " \\\n  | ".join(shlex.join(stage) for stage in stages) + "\n")


def run_job(job: Job, *, warn: Warn, show_progress: bool = True, bar=None, heat=None
            ) -> tuple[int, int]:
    """Run a planned job. Returns (frames processed now, segments reused).

    Nothing appears at the output path unless the whole job succeeded; with chunks,
    finished segments are kept beside the output so a rerun resumes. ``bar``: a tqdm bar
    to advance instead of the job's own (a batch's bar over all its files); ``heat``: a
    :class:`.thermal.HeatLog` to sample meanwhile (shown on the bar when not nominal).
    """
    for message in job.warnings:
        warn(message)
    if job.request.force and job.request.output.exists():
        warn(f"{job.request.output} will be replaced when the job succeeds")
    # What a killed run left is removed: scratch directories, this output's partial file.
    partial_path(job.request.output).unlink(missing_ok=True)
    with job_scratch() as work:
        script = Path(work) / "upscale.vpy"
        script.write_text(job.script)
        job.index.save(Path(work) / "index.json")
        own = _bar(job, show_progress) if bar is None else contextlib.nullcontext(bar)
        with own as bar, contextlib.nullcontext() if heat is None else heat.watching(bar):
            if job.request.chunks == 1:
                return _run_straight(job, script, bar), 0
            return run_chunked(job, script, bar, warn)


def _bar(job: Job, show: bool):
    from tqdm import tqdm

    desc = "upscaling (background priority)" if job.request.background else "upscaling"
    return tqdm(total=job.frames, unit="frame", desc=desc, dynamic_ncols=True,
                disable=None if show else True, smoothing=0.1, leave=False)


def _run_straight(job: Job, script: Path, bar) -> int:
    output = job.request.output
    partial = partial_path(output)
    comp = companion(job, script.parent)
    tail = [*comp.input(), "-map", "0:v", *comp.maps(output, job.refused_codecs),
            *encode_args(job, comp.video_offset), str(partial)]
    try:
        frames = pipe(job, script, job.first, job.last, tail, bar,
                      max(comp.video_offset, Fraction(0)))
        settle_flags(job, partial)
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)
    return frames
