"""Pipeline efficiency: frames/s, the share of wall time in which the backend computes
(what tiling, conversion and stitching cost where they do not overlap it) and compute
waste (computed tile area / frame area) of our backends, with a random-weight
SRVGGNetCompact of realesr-animevideov3's shape, with one VapourSynth thread and with its
default count.

    python scripts/bench.py [--sizes 1920x1080,640x360] [--frames 2] [--vs-threads N]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench import common
from bench.runners import _worker, label, our_runners, precisions


def efficiency(sizes: list[tuple[int, int]], frames: int, overlap: int,
               thread_counts: list[int | None]) -> None:
    """Part 1: each of our backends at each size, in the tiles the filter plans, with each
    VapourSynth thread count (None: its default)."""
    import torch

    facts = precisions()
    print(f"random SRVGGNetCompact x4 (16 convs, 64 feat); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; overlap {overlap}; {frames} frames after "
          f"{common.WARM_UP_FRAMES} untimed, requested as vspipe does; YUV420P8 input; each run "
          "in its own process; pipeline efficiency: share of wall time the backend is busy")
    print("| frame | backend | VS threads | tile | tiles | compute waste | s/frame | fps | "
          "pipeline efficiency | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as work:
        for width, height in sizes:
            for runner in our_runners():
                for threads in thread_counts:
                    r = _worker(runner, "random-compact", (width, height), frames,
                                Path(work), overlap=overlap, vs_threads=threads)
                    print(f"| {width}x{height} | "
                          f"{label(runner, facts).removeprefix('ours: ')} | "
                          f"{r['vs_threads']} | {r['tile']} | {r['tiles']} | "
                          f"{r['waste']:.3f} | {r['s_per_frame']:.2f} | "
                          f"{1 / r['s_per_frame']:.3f} | {r['efficiency']:.3f} | "
                          f"{r['peak_rss_mb']:.0f} |", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1920x1080,640x360", help="frame sizes")
    parser.add_argument("--vs-threads", type=int, default=None,
                        help="VapourSynth threads (default: 1 and its own default)")
    parser.add_argument("--frames", type=int, default=2, help="timed frames per run")
    parser.add_argument("--overlap", type=int, default=16)
    args = parser.parse_args(argv)
    sizes = [common.size(s) for s in args.sizes.split(",")]
    threads = [args.vs_threads] if args.vs_threads else [1, None]
    efficiency(sizes, args.frames, args.overlap, threads)
    return 0
