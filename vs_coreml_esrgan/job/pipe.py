"""Process chains: ``vspipe | [relay |] ffmpeg`` started, watched with a progress bar,
and stopped together. Used by a straight run, by segments and by cluster workers."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

from .media import JobError
from .plan import Job
from .relay import command as relay_command


def seconds(value: Fraction) -> str:
    return f"{float(value):.6f}"


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
    errors[0] = [bytes(progress.text)]
    texts = [b"".join(text).decode(errors="replace").strip() for text in errors]
    report = failure_report([name for name, _, _ in stages], statuses, texts)
    if report:
        raise JobError(report)
    return last - first + 1


def failure_report(names: list[str], statuses: list[int], texts: list[str]) -> str:
    """What failed in a chain, each with its messages ("" when all exited 0). When one
    process fails the others usually fail as a consequence (a closed pipe, a truncated
    stream), so every message is shown, except a writer's silent SIGPIPE death when a
    later process failed: it only lost its reader, which says why."""
    failed = [k for k, status in enumerate(statuses) if status != 0]
    shown = [k for k in failed if not (statuses[k] == -signal.SIGPIPE and not texts[k]
                                       and any(later > k for later in failed))]
    return "\n".join(f"{names[k]} failed (exit {statuses[k]}):\n{texts[k][-4000:]}"
                     for k in shown)


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
