"""Segments on a Dask cluster: every worker checked before any work, each missing segment
one task (run by :func:`.cluster_worker.encode_segment`), the results kept beside the
outputs as a local chunked job keeps them, and each file joined here when its last segment
arrives. The only module that imports Dask (and only when a job names a cluster).

Failures: a task that raises is retried once; a worker that dies takes its task with it
and the scheduler gives it to another (Dask's own rule, up to
``distributed.scheduler.allowed-failures`` deaths). Tasks run only on the workers that
passed the check: one that joins later is not used by this run. Ctrl-C sets an event the
tasks watch (they stop vspipe and ffmpeg), cancels them, and keeps finished segments.
"""

from __future__ import annotations

import re
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..catalogue import DEFAULT_MODEL
from .batch import Outcome, Planned, Report, Warn, done, give_up_frames, kept_note
from .cluster_worker import (
    FileCheck,
    encode_segment,
    fingerprint,
    inspect_engine,
    inspect_inputs,
)
from .cluster_worker import worker_label as _label
from .media import JobError
from .run import Interrupted
from .segments import Segment, join_segments, open_parts, store_segment

CONNECT_SECONDS = 10
WORKER_WAIT_SECONDS = 10
POLL_SECONDS = 2


_ADDRESS = re.compile(r"(?:(?P<scheme>[a-z]+)://)?(?:\[[0-9a-fA-F:.]+\]|[\w.-]+):\d{1,5}")


def connect(address: str):
    """A Dask client of the scheduler at ``address`` (``tcp://HOST:PORT``), with at least
    one worker. Raises JobError. Meant to be called before planning a long batch, so a
    mistyped address costs nothing."""
    usage = ("--cluster takes the scheduler's address as `dask scheduler` prints it, "
             "tcp://HOST:PORT (e.g. tcp://192.168.1.20:8786)")
    match = _ADDRESS.fullmatch(address)
    if not match:
        raise JobError(f"{usage}; got {address!r}")
    try:
        from distributed import Client
        from distributed.comm.registry import backends
    except ImportError:
        raise JobError("--cluster needs Dask: pip install 'vs-coreml-esrgan[cluster]' "
                       "(on this machine and on every worker)") from None
    scheme = match.group("scheme")
    # Dask's own transports (tcp, tls, ...; inproc is within one process): another
    # scheme (http://) made Dask hang 20 s and print a traceback at exit.
    if scheme is not None and (scheme not in backends or scheme == "inproc"):
        known = ", ".join(f"{name}://" for name in sorted(backends) if name != "inproc")
        raise JobError(f"{usage}; Dask has no {scheme}:// transport (it has {known}); got "
                       f"{address!r}")
    try:
        client = Client(address, timeout=CONNECT_SECONDS, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise JobError(f"no Dask scheduler answers at {address} ({exc}); start one with "
                       f"`dask scheduler` and a worker per machine with `dask worker "
                       f"{address}`") from None
    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT_SECONDS)
    except TimeoutError:
        client.close()
        raise JobError(f"the scheduler at {address} has no workers; start `dask worker "
                       f"{address}` on each machine") from None
    return client


def _worker_names(client) -> dict[str, str]:
    """Every worker the scheduler knows now, as messages name them.

    Asked of the scheduler directly: ``Client.scheduler_info()`` returns the client's
    cache, which its own periodic refresh (every 2 s) overwrites with a copy that lists
    no workers (distributed 2025+), so read just after a refresh it said a live farm
    had none, and a long job gave up on every file."""
    if _takes_count(client):
        info = client.sync(client.scheduler.identity, n_workers=-1)
    else:  # older distributed: the cache always lists every worker
        info = client.scheduler_info()
    return {address: _label(w.get("name"), address) for address, w in info["workers"].items()}


def _takes_count(client) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


@dataclass
class Workers:
    """The workers checked before planning (the only ones that take tasks), how messages
    name them, the inputs as the client saw them, and the inputs some worker cannot use."""

    addresses: list[str]
    labels: dict[str, str]
    files: dict[str, FileCheck] = field(default_factory=dict)  # resolved path -> facts
    refused: dict[str, str] = field(default_factory=dict)  # resolved path -> why

    def refusal(self, source: Path) -> str | None:
        return self.refused.get(str(source.resolve()))


def check_inputs(client, sources: list[Path]) -> Workers:
    """Ask every worker, before anything is planned, whether it sees each input at the
    same path with the same content and can run vspipe and ffmpeg. Raises JobError for
    what stops every file (a tool missing, another vs-coreml-esrgan version, a worker
    that cannot run the check); an input some worker cannot use is refused alone, naming
    the worker. Inputs this machine cannot read are left to planning to report."""
    from ..version import __version__

    files = {}
    for source in sources:
        path = source.resolve()
        try:
            files[str(path)] = fingerprint(path)
        except OSError:
            continue
    reports = client.run(inspect_inputs, list(files.values()), on_error="return")
    names = _worker_names(client)
    labels = {address: names.get(address, address) for address in reports}
    for address, facts in sorted(reports.items()):
        if isinstance(facts, BaseException):  # e.g. vs-coreml-esrgan not installed there
            raise JobError(f"worker {labels[address]} could not run the check "
                           f"({type(facts).__name__}: {facts}); install "
                           "'vs-coreml-esrgan[cluster]' there, the same version as here")
        if facts.problems:
            raise JobError(f"worker {labels[address]}: " + "; ".join(facts.problems))
        if facts.version != __version__:
            raise JobError(f"worker {labels[address]} runs vs-coreml-esrgan {facts.version}"
                           f", this machine {__version__}: install the same version "
                           "everywhere (another version may compute other frames)")
    refused = {}
    for path in files:
        blind = [f"worker {labels[a]} {f.files[path]}" for a, f in sorted(reports.items())
                 if path in f.files]
        if blind:
            refused[path] = ("; ".join(blind) + ": every worker must see the input at the "
                             "same path (mount the share there on each machine)")
    return Workers(sorted(reports), labels, files, refused)


def check_engines(client, workers: Workers, planned: list[Planned]) -> str:
    """Ask the checked workers, once the jobs are planned, for the model, the source
    filters and their backend. Raises JobError when one lacks something or when their
    backends differ (their frames would differ where segments meet). Returns the
    summary's note on what computes."""
    first = planned[0].job
    model = first.request.upscale.model or DEFAULT_MODEL
    namespaces = sorted({item.job.info.namespace for item in planned})
    reports = client.run(inspect_engine, model, first.model_digest,
                         first.request.upscale.backend, namespaces,
                         first.request.upscale.precision or "auto",
                         workers=workers.addresses, on_error="return")
    label = workers.labels
    for address, facts in sorted(reports.items()):
        if isinstance(facts, BaseException):
            raise JobError(f"worker {label.get(address, address)} could not run the check "
                           f"({type(facts).__name__}: {facts})")
        if facts.problems:
            raise JobError(f"worker {label[address]}: " + "; ".join(facts.problems))
    if len({facts.backend for facts in reports.values()}) > 1:
        listing = ", ".join(f"{label[a]}: {f.engine}" for a, f in sorted(reports.items()))
        raise JobError(f"the workers would compute with different backends ({listing}): "
                       "segments would differ where they meet. Use one kind of worker, or "
                       "pass --backend torch (it runs everywhere)")
    if len({facts.precision for facts in reports.values()}) > 1:
        listing = ", ".join(f"{label[a]}: {f.engine}" for a, f in sorted(reports.items()))
        raise JobError(f"the workers would compute in different precisions ({listing}): "
                       "segments would differ where they meet. Pass --precision fp32 (every "
                       "CPU computes it), or use workers of one kind")
    engines = Counter(f.engine for f in reports.values())
    note = (f"cluster: {len(reports)} workers checked, computing with "
            + ", ".join(f"{engine} ({count})" for engine, count in sorted(engines.items())))
    if len(engines) > 1:
        note += ": one backend, different devices; values may differ in the last bit"
    return note


@dataclass
class _File:
    """One job in flight: its segments, which are still to come, what was counted."""

    item: Planned
    segments: list[Segment]
    missing: set[int]
    reused: int
    processed: int = 0
    outcome: Outcome | None = None


def run_on_cluster(client, workers: Workers, planned: list[Planned], bar, warn: Warn,
                   report: Report) -> None:
    """Run the jobs' missing segments on ``workers`` (see :func:`connect` and
    :func:`check_inputs`; inputs they refused are not in ``planned``), join each file
    here, and add an outcome per file (and the notes) to ``report``. Raises JobError
    before any work for what stops every file; Ctrl-C and stop signals cancel the tasks
    (the files are recorded as interrupted) and are re-raised."""
    if not planned:
        return
    report.notes.append(check_engines(client, workers, planned))
    _run(client, workers, planned, bar, warn, report)


def _run(client, workers: Workers, planned: list[Planned], bar, warn: Warn,
         report: Report) -> None:
    from distributed import Event, as_completed

    stop_event = f"vs-coreml-esrgan-stop-{uuid.uuid4().hex}"
    files: list[_File] = []
    for item in planned:
        try:
            segments = open_parts(item.job)
        except JobError as exc:
            give_up_frames(bar, item.job.frames)
            report.outcomes.append(Outcome(item.entry, "failed", str(exc)))
            continue
        missing = {s.number for s in segments if not s.done}
        if bar is not None:
            bar.update(sum(s.frames for s in segments if s.done))
        files.append(_File(item, segments, missing, len(segments) - len(missing)))
    pending = _submit(client, workers, files, stop_event)
    finished_queue = as_completed(list(pending), loop=client.loop)
    ran_on: Counter[str] = Counter()
    try:
        for file in files:
            if not file.missing:
                _finish(file, warn)
        while pending:
            finished = _next_finished(client, finished_queue, pending, workers.addresses)
            if finished is None:
                _lose_all(client, pending, files, bar, len(workers.addresses))
                break
            for future in finished:
                file, segment = pending.pop(future)
                _collect(client, future, file, segment, pending, bar, ran_on)
                if file.outcome is None and not file.missing:
                    _finish(file, warn)
    except (KeyboardInterrupt, Interrupted):
        Event(stop_event, client=client).set()  # running tasks stop vspipe and ffmpeg
        client.cancel(list(pending))
        for file in files:
            if file.outcome is None:
                file.outcome = Outcome(file.item.entry, "interrupted", kept_note(file.item.job))
        raise
    finally:
        report.outcomes += [f.outcome for f in files if f.outcome is not None]
        if ran_on:
            report.notes.append("segments computed: " + ", ".join(
                f"{name} {count}" for name, count in sorted(ran_on.items())))


def _submit(client, workers: Workers, files: list[_File], stop_event: str) -> dict:
    """One task per missing segment, earlier files first (Dask runs higher priorities
    first), pinned to the checked workers."""
    pending = {}
    for position, file in enumerate(files):
        job = file.item.job
        source = workers.files.get(job.index.path) or fingerprint(Path(job.index.path))
        for segment in file.segments:
            if segment.number in file.missing:
                future = client.submit(
                    encode_segment, job, segment.first, segment.last, source, stop_event,
                    key=f"segment-{segment.number:05d}-{uuid.uuid4().hex}", pure=False,
                    workers=workers.addresses, allow_other_workers=False, retries=1,
                    priority=len(files) - position)
                pending[future] = (file, segment)
    return pending


def _next_finished(client, finished, pending: dict, workers: list[str]):
    """The futures in ``pending`` that finished (or failed), from the ``as_completed``
    queue ``finished``; None once no checked worker is left."""
    waited = 0.0
    while True:
        batch = [future for future in finished.next_batch(block=False) if future in pending]
        if batch:
            return batch
        time.sleep(0.1)  # short: Ctrl-C is handled between sleeps
        waited += 0.1
        if waited >= POLL_SECONDS:
            waited = 0.0
            if not set(_worker_names(client)) & set(workers):
                return None


def _collect(client, future, file: _File, segment: Segment, pending: dict, bar,
             ran_on: Counter) -> None:
    """Keep a finished segment; a failed one fails its file (its other tasks cancelled)."""
    if file.outcome is not None:  # the file failed already
        return
    if future.status == "finished":
        data, worker = future.result()
        store_segment(segment, data)
        ran_on[worker] += 1
        file.missing.discard(segment.number)
        file.processed += segment.frames
        if bar is not None:
            bar.update(segment.frames)
        return
    error = future.exception() if future.status == "error" else "cancelled"
    reason = str(error) or type(error).__name__
    if type(error).__name__ == "KilledWorker":
        reason = (f"frames {segment.first}-{segment.last} took down every worker that ran "
                  f"them ({error})")
    others = [f for f, (owner, _) in pending.items() if owner is file]
    client.cancel(others)
    for other in others:
        pending.pop(other)
    give_up_frames(bar, sum(s.frames for s in file.segments if s.number in file.missing))
    file.outcome = Outcome(file.item.entry, "failed", f"{reason} ({kept_note(file.item.job)})")


def _finish(file: _File, warn: Warn) -> None:
    """All segments are here: join them into the output (atomically)."""
    job = file.item.job
    if file.reused:
        warn(f"{file.item.entry.source.name}: resumed: {file.reused} of "
             f"{len(file.segments)} segments were already done")
    try:
        with tempfile.TemporaryDirectory(prefix="vs-coreml-esrgan-") as work:
            join_segments(job, file.segments, Path(work))
    except JobError as exc:
        file.outcome = Outcome(file.item.entry, "failed", str(exc))
        return
    file.outcome = done(file.item, file.processed, file.reused)


def _lose_all(client, pending: dict, files: list[_File], bar, checked: int) -> None:
    client.cancel(list(pending))
    pending.clear()
    for file in files:
        if file.outcome is None:
            give_up_frames(bar, sum(s.frames for s in file.segments
                                    if s.number in file.missing))
            file.outcome = Outcome(file.item.entry, "failed", f"all {checked} checked "
                                   "workers left the cluster; finished segments are kept: "
                                   "rerun with workers to resume")

