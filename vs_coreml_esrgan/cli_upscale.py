"""``vs-coreml-esrgan upscale``: one file (``IN OUT``), a batch (``IN... -o OUTDIR``), on
this machine or on a Dask cluster (``--cluster``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

PROG = "vs-coreml-esrgan"
CLUSTER_ENV = "VS_COREML_ESRGAN_CLUSTER"
USAGE = (f"{PROG} upscale [options] IN OUT\n"
         f"       {PROG} upscale [options] IN [IN ...] -o OUTDIR   (files or directories)")


def add_upscale_parser(commands, tile_type) -> None:
    job = commands.add_parser("upscale", usage=USAGE, help="upscale video files, audio and "
                              "subtitles kept (vspipe | ffmpeg); many files with -o OUTDIR")
    job.add_argument("paths", nargs="+", metavar="IN",
                     help="IN OUT: one file (.mkv, .mp4, .mov, .m4v or .webm, never "
                     "overwritten without --force); with -o: input files and directories")
    job.add_argument("-o", "--output-dir", metavar="OUTDIR", help="batch: write "
                     "OUTDIR/NAME.mkv for each input (existing outputs are skipped)")
    job.add_argument("--container", choices=("mkv", "mp4", "mov", "m4v", "webm"),
                     default="mkv", help="batch: the outputs' container (default mkv)")
    job.add_argument("--cluster", metavar="tcp://HOST:PORT", help="run the segments on a "
                     f"Dask scheduler's workers (default: ${CLUSTER_ENV} when set)")
    job.add_argument("--model", help="model name or file (default realesr-animevideov3)")
    job.add_argument("--tile", type=tile_type, help="W or WxH (default: planned per frame "
                     "size)")
    job.add_argument("--overlap", type=int, help="context pixels per tile edge (default: "
                     "from the model, see `inspect MODEL`)")
    job.add_argument("--backend", choices=("auto", "torch", "coreml", "mil"), default="auto")
    job.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"),
                     help="default auto: fp16 with Core ML and GPUs; on the CPU bf16 where "
                     "it computes bfloat16 natively (AVX512-BF16, AMX), else fp32")
    job.add_argument("--prefer", choices=("auto", "speed", "efficiency"),
                     help="Core ML on a Mac: speed (the fastest unit) or efficiency (the "
                     "Neural Engine when at most twice as slow); default auto: efficiency "
                     "on a Mac with a battery")
    from .job.encoders import ENCODERS

    job.add_argument("--encoder", choices=tuple(ENCODERS), metavar="ENCODER",
                     help="default x264 (.webm: vp9); software: x264, x265, av1, vp9, "
                     "prores, ffv1; hardware by ffmpeg's name where the ffmpeg has it: "
                     f"{', '.join(n for n, e in ENCODERS.items() if e.hardware)}")
    job.add_argument("--crf", type=int, help="constant quality where lower is better "
                     "(x264 16, x265 18, av1 28, vp9 30, NVENC 19-30 by default; prores "
                     "and ffv1 have none)")
    job.add_argument("--quality", type=int, help="the encoder's own quality value on its "
                     "own scale, e.g. VideoToolbox -q:v 1-100, higher is better (default "
                     "65); --print shows the option and its range")
    job.add_argument("--preset", help="encoder preset: x264/x265 ultrafast..placebo, av1 "
                     "-1..13 (lower is slower), NVENC p1..p7, QSV veryfast..veryslow")
    job.add_argument("--background", action="store_true", help="run at background "
                     "priority (macOS: as taskpolicy -b; Linux: nice 10, idle I/O)")
    job.add_argument("--bit-depth", type=int, choices=(8, 10, 12, 16),
                     help="default: the source's where the encoder takes it (HDR: 10 at "
                     "least; prores: 10)")
    job.add_argument("--source", choices=("auto", "bs", "ffms2", "lsmas", "builtin"),
                     default="auto", help="source filter: auto takes bestsource, ffms2 or "
                     "lsmas when installed, else the built-in one (PyAV, no plugin)")
    job.add_argument("--deinterlace", action="store_true", help="deinterlace with bwdif "
                     "(pip install vapoursynth-bwdif) at the same frame rate before "
                     "upscaling; interlaced input is refused without it")
    job.add_argument("--start", type=int, help="first frame (default 0)")
    job.add_argument("--end", type=int, help="last frame, inclusive (default: the last)")
    job.add_argument("--chunks", type=int, help="encode in N resumable segments (default 1; "
                     "with --cluster one per 500 frames)")
    job.add_argument("--force", action="store_true", help="replace existing outputs")
    job.add_argument("--print", action="store_true", help="show the .vpy and the pipeline "
                     "instead of running them")
    job.set_defaults(func=cmd_upscale)


def _request(args: argparse.Namespace, source: Path, output: Path):
    from .job.plan import JobRequest
    from .job.script import UpscaleOptions

    return JobRequest(
        source=source, output=output,
        upscale=UpscaleOptions(model=args.model, tile=args.tile, overlap=args.overlap,
                               backend=args.backend, precision=args.precision,
                               prefer=args.prefer),
        encoder=args.encoder, crf=args.crf, quality=args.quality, preset=args.preset,
        bits=args.bit_depth, start=args.start, end=args.end,
        chunks=1 if args.chunks is None else args.chunks, force=args.force,
        source_filter=args.source, deinterlace=args.deinterlace,
        background=args.background)


def _warn(message: str) -> None:
    from .job.batch import write_line

    write_line(f"{PROG}: warning: {message}")


def cmd_upscale(args: argparse.Namespace) -> int:
    from .errors import UsageError

    if args.background and not args.print:
        _background()
    cluster = args.cluster or os.environ.get(CLUSTER_ENV) or None
    if args.output_dir is not None:
        return _batch(args, cluster)
    if len(args.paths) != 2:
        raise UsageError(f"upscale takes IN OUT for one file, or IN [IN ...] -o OUTDIR for "
                         f"a batch; got {len(args.paths)} paths without -o")
    if args.container != "mkv":
        raise UsageError("--container applies to a batch (-o OUTDIR); the output's name "
                         "gives its container")
    return _single(args, cluster)


def _background() -> None:
    """This process and all it starts at background priority (``--background``)."""
    from .job.priority import lower_priority

    try:
        print(f"{PROG}: running at {lower_priority()}", file=sys.stderr)
    except OSError as exc:
        _warn(f"--background: the system refused to lower the priority ({exc})")


def _single(args: argparse.Namespace, cluster: str | None) -> int:
    from .job.media import JobError
    from .job.plan import plan_job
    from .job.run import Interrupted, describe, run_job, stop_on_signals
    from .job.thermal import HeatLog

    source, output = (Path(p) for p in args.paths)
    kept = " (finished segments are kept: rerun the same command to resume)" \
        if (args.chunks or 1) > 1 or cluster else ""
    try:
        with stop_on_signals(), _connected(None if args.print else cluster) as client:
            workers = _visible(client, [source])
            if workers is not None and workers.refusal(source):
                raise JobError(workers.refusal(source))
            job = plan_job(_request(args, source, output))
            if args.print:
                for message in job.warnings:  # what the run would say, said now
                    _warn(message)
                print(describe(job), end="")
                return 0
            heat = HeatLog.for_this_machine()
            if client is None:
                processed, reused = run_job(job, warn=_warn, heat=heat)
            else:
                processed, reused = _single_on_cluster(args, client, workers, job)
    except JobError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing was written to {output}{kept}", file=sys.stderr)
        return 130
    except Interrupted as stop:
        print(f"{PROG}: stopped by {stop}; nothing was written to {output}{kept}",
              file=sys.stderr)
        return 128 + stop.signum
    print(f"{output}: {job.frames} frames ({processed} processed now"
          + (f", {reused} segment{'s' * (reused != 1)} reused" if reused else "") + ")")
    if heat is not None and client is None:
        print(heat.summary())
    return 0


def _connected(cluster: str | None):
    """The cluster's client (connected before planning: a wrong address costs nothing),
    or None without a cluster; closed at the end."""
    import contextlib

    if cluster is None:
        return contextlib.nullcontext()
    from .job.cluster import connect

    return contextlib.closing(connect(cluster))


def _visible(client, sources: list[Path]):
    """With a cluster: every worker asked which inputs it can use (before planning, so a
    file no worker can read is not indexed first); None without one."""
    if client is None:
        return None
    from .job.cluster import check_inputs

    return check_inputs(client, sources)


def _single_on_cluster(args: argparse.Namespace, client, workers, job) -> tuple[int, int]:
    from .job.batch import Entry, Planned, Report, progress_bar
    from .job.cluster import run_on_cluster
    from .job.media import JobError

    item = _cluster_chunks(args, Planned(Entry(job.request.source, job.request.output), job))
    for message in job.warnings:
        _warn(message)
    report = Report()
    with progress_bar(job.frames, args.background) as bar:
        run_on_cluster(client, workers, [item], bar, _warn, report)
    for note in report.notes:
        print(note, file=sys.stderr)
    outcome = report.outcomes[0]
    if outcome.status != "done":
        raise JobError(outcome.detail)
    return outcome.processed, outcome.reused


def _cluster_chunks(args: argparse.Namespace, item):
    """With --cluster and no --chunks: segments of about 500 frames (the unit a worker
    takes and, when lost, reruns)."""
    from dataclasses import replace

    from .job.segments import cluster_chunks

    if args.chunks:
        return item
    request = replace(item.job.request, chunks=cluster_chunks(item.job.frames))
    return replace(item, job=replace(item.job, request=request))


def _batch(args: argparse.Namespace, cluster: str | None) -> int:
    from .job import batch
    from .job.media import JobError
    from .job.run import Interrupted, describe, stop_on_signals
    from .job.thermal import HeatLog

    entries: list[batch.Entry] = []
    report = batch.Report()
    heat = None
    try:
        with stop_on_signals(), _connected(None if args.print else cluster) as client:
            entries = batch.batch_entries([Path(p) for p in args.paths],
                                          Path(args.output_dir), f".{args.container}")
            workers = _visible(client, [e.source for e in entries
                                        if args.force or not e.output.exists()])
            refused = [batch.Outcome(e, "failed", why) for e in entries
                       if workers is not None and (why := workers.refusal(e.source))
                       and (args.force or not e.output.exists())]
            report.outcomes += refused
            planned, known = batch.plan_entries(
                _checking([e for e in entries if e not in {o.entry for o in refused}]),
                _request(args, Path(), Path()))
            report.outcomes += known
            if args.print:
                for item in planned:
                    for message in item.job.warnings:
                        _warn(f"{item.entry.source.name}: {message}")
                    print(f"# {item.entry.source} -> {item.entry.output}\n"
                          f"{describe(item.job)}")
                print(batch.summary(known), end="", file=sys.stderr)
                return 1 if batch.failed(known) else 0
            with batch.progress_bar(sum(p.job.frames for p in planned),
                                    args.background) as bar:
                if client is None:
                    heat = HeatLog.for_this_machine()
                    batch.run_local(planned, bar, _warn, report, heat)
                else:
                    _on_cluster(args, client, workers, planned, bar, report)
    except JobError as exc:  # before any file ran: the command line or the cluster
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        _report(entries, report)
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Interrupted as stop:
        _report(entries, report)
        print(f"{PROG}: stopped by {stop}", file=sys.stderr)
        return 128 + stop.signum
    _report(entries, report)
    if heat is not None:
        print(heat.summary())
    return 1 if batch.failed(report.outcomes) else 0


def _checking(entries):
    """Planning reads every file once (the frame index): a bar over the files meanwhile."""
    from tqdm import tqdm

    return tqdm(entries, desc="checking", unit="file", disable=None, leave=False)


def _on_cluster(args: argparse.Namespace, client, workers, planned, bar, report) -> None:
    from .job.cluster import run_on_cluster

    planned = [_cluster_chunks(args, item) for item in planned]
    for item in planned:
        for message in item.job.warnings:
            _warn(f"{item.entry.source.name}: {message}")
    run_on_cluster(client, workers, planned, bar, _warn, report)


def _report(entries, report) -> None:
    """The summary in the order the files were given, and the notes, on stdout."""
    from .job.batch import summary

    order = {entry: k for k, entry in enumerate(entries)}
    print(summary(sorted(report.outcomes, key=lambda o: order[o.entry])), end="")
    for note in report.notes:
        print(note)
