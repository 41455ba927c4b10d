"""A queue of files: inputs (files and directories) to outputs in one directory, each
file run as a single job is, one progress bar over all frames, and a summary.

Output names: ``OUTDIR/STEM.mkv`` (Matroska holds every audio and subtitle codec, so a
batch drops nothing), or ``.mp4`` etc. with ``--container``. Two inputs that would get the
same output name (``a/ep1.mp4`` and ``b/ep1.mkv``; compared without case, as macOS's
file system does) are refused before any work. An existing output is skipped (``--force``
replaces it), so rerunning a batch continues where it stopped.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from .media import CONTAINERS, JobError
from .plan import Job, JobRequest, plan_job
from .run import Interrupted, run_job

# What a directory given as input contributes (hidden files, e.g. our own partial
# outputs, are left out).
VIDEO_SUFFIXES = frozenset({".mkv", ".mp4", ".m4v", ".mov", ".webm", ".avi", ".ts", ".m2ts",
                            ".mts", ".mpg", ".mpeg", ".vob", ".wmv", ".flv", ".ogv", ".3gp",
                            ".y4m"})

Warn = Callable[[str], None]


@dataclass(frozen=True)
class Entry:
    source: Path
    output: Path


@dataclass(frozen=True)
class Planned:
    entry: Entry
    job: Job


@dataclass(frozen=True)
class Outcome:
    """What became of one file: 'done', 'skipped', 'failed', 'interrupted' or 'not run'."""

    entry: Entry
    status: str
    detail: str = ""
    processed: int = 0  # frames processed now (done)
    reused: int = 0  # segments found finished (done)


@dataclass
class Report:
    """What a run found: an outcome per file handled so far, and notes (the cluster's
    workers and their backends)."""

    outcomes: list[Outcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def collect_sources(inputs: Iterable[Path]) -> list[Path]:
    """The files to process: each input file as given (a missing one fails in its turn),
    each directory's video files by name (not its subdirectories). The same file given
    twice is taken once. Raises JobError for a directory without video files."""
    found: list[Path] = []
    seen: set[Path] = set()
    for given in inputs:
        if given.is_dir():
            videos = sorted(p for p in given.iterdir() if p.is_file() and not
                            p.name.startswith(".") and p.suffix.lower() in VIDEO_SUFFIXES)
            if not videos:
                raise JobError(f"input directory {given} holds no video files (looked for "
                               f"{', '.join(sorted(VIDEO_SUFFIXES))})")
        else:
            videos = [given]
        for path in videos:
            key = path.resolve()
            if key not in seen:
                seen.add(key)
                found.append(path)
    return found


def batch_entries(inputs: Iterable[Path], outdir: Path, container: str = ".mkv"
                  ) -> list[Entry]:
    """Each source with its output ``outdir/STEM{container}``. Raises JobError before any
    work when the output directory is unusable or two sources would share an output."""
    if container not in CONTAINERS:
        raise JobError(f"--container must be one of {', '.join(CONTAINERS)}, got {container}")
    if not outdir.is_dir():
        raise JobError(f"output directory {outdir} does not exist; create it first")
    given = list(inputs)
    for path in given:
        if path.is_dir() and path.resolve() == outdir.resolve():
            raise JobError(f"the output directory {outdir} is also an input directory: a "
                           "rerun would take the outputs for inputs; choose another one")
    entries = [Entry(source, outdir / f"{source.stem}{container}")
               for source in collect_sources(given)]
    by_name: dict[str, Entry] = {}
    for entry in entries:
        other = by_name.setdefault(entry.output.name.casefold(), entry)
        if other is not entry:
            raise JobError(f"{other.source} and {entry.source} would both be written to "
                           f"{entry.output}; rename one, or run them into different "
                           "directories")
    return entries


def plan_entries(entries: Iterable[Entry], template: JobRequest
                 ) -> tuple[list[Planned], list[Outcome]]:
    """Plan every file up front (all the checks a single job makes). Returns the jobs to
    run and the outcomes known already: outputs that exist (skipped unless
    ``template.force``) and files that cannot run (failed, with the reason).
    ``template.deinterlace`` deinterlaces the interlaced files only."""
    planned, known = [], []
    for entry in entries:
        if entry.output.exists() and not template.force:
            known.append(Outcome(entry, "skipped", f"{entry.output} exists (--force "
                                                   "replaces it)"))
            continue
        try:
            job = plan_job(replace(template, source=entry.source, output=entry.output,
                                   deinterlace_progressive=False))
        except JobError as exc:
            known.append(Outcome(entry, "failed", str(exc)))
            continue
        planned.append(Planned(entry, job))
    return planned, known


def progress_bar(total: int, background: bool = False):
    """One tqdm bar (on stderr, only where it is a terminal) over ``total`` frames; it says
    when the job runs at background priority."""
    from tqdm import tqdm

    desc = "upscaling (background priority)" if background else "upscaling"
    return tqdm(total=total, unit="frame", desc=desc, dynamic_ncols=True,
                disable=None, smoothing=0.1, leave=False)


def give_up_frames(bar, frames: int) -> None:
    """Take a failed file's frames that were not counted off the bar's total."""
    if bar is not None and bar.total is not None:
        bar.total = max(bar.n, bar.total - frames)
        bar.refresh()


def run_local(planned: list[Planned], bar, warn: Warn, report: Report, heat=None) -> None:
    """Run the jobs one after another on this machine, adding their outcomes to
    ``report``. A failing file is recorded and the next one runs; Ctrl-C or a stop signal
    ends the queue (the running file's finished segments are kept; it and the rest are
    recorded) and is re-raised. ``heat``: see :func:`.run.run_job`."""
    for position, item in enumerate(planned):
        name = item.entry.source.name
        if bar is not None:
            bar.set_postfix_str(name, refresh=True)
        before = bar.n if bar is not None else 0
        try:
            processed, reused = run_job(item.job, bar=bar, heat=heat,
                                        warn=lambda m, name=name: warn(f"{name}: {m}"))
        except JobError as exc:
            give_up_frames(bar, item.job.frames - (bar.n - before if bar is not None else 0))
            report.outcomes.append(Outcome(item.entry, "failed", str(exc)))
            continue
        except (KeyboardInterrupt, Interrupted):
            report.outcomes.append(Outcome(item.entry, "interrupted", kept_note(item.job)))
            report.outcomes.extend(Outcome(p.entry, "not run") for p in planned[position + 1:])
            raise
        report.outcomes.append(done(item, processed, reused))


def done(item: Planned, processed: int, reused: int) -> Outcome:
    text = (f"{item.job.frames} frames ({processed} processed now"
            + (f", {reused} segment{'s' * (reused != 1)} reused" if reused else "") + ")")
    return Outcome(item.entry, "done", text, processed, reused)


def kept_note(job: Job) -> str:
    if job.request.chunks > 1:
        return "finished segments are kept; rerun the same command to resume"
    return "nothing was written"


def summary(outcomes: list[Outcome]) -> str:
    """One line of counts, then one line per file (a multi-line reason indented)."""
    order = ("done", "skipped", "failed", "interrupted", "not run")
    counts = [f"{sum(o.status == s for o in outcomes)} {s}" for s in order
              if any(o.status == s for o in outcomes)]
    lines = [f"summary: {', '.join(counts) or 'nothing to do'}"]
    for outcome in outcomes:
        source, output = outcome.entry.source, outcome.entry.output
        head = f"  {outcome.status:11} {source}" + (f" -> {output}" if outcome.status ==
                                                    "done" else "")
        detail = outcome.detail.replace("\n", "\n" + " " * 16)
        lines.append(f"{head}: {detail}" if detail else head)
    return "\n".join(lines) + "\n"


def write_line(text: str) -> None:
    """A message on stderr that does not break the progress bar."""
    from tqdm import tqdm

    tqdm.write(text, file=sys.stderr)


def failed(outcomes: list[Outcome]) -> bool:
    return any(o.status == "failed" for o in outcomes)
