"""Benchmark: the same batch with one and with two local Dask workers (and on this machine
without a cluster), frames per second and the scaling.

The batch is generated (testsrc2 clips with audio, a random-weight SRVGGNetCompact of
realesr-animevideov3's shape unless --model names another) and run through the real
command, ``vs-coreml-esrgan upscale DIR -o OUT [--cluster ADDRESS]``, so the figures
include planning, the workers' checks, segment transfer and the joins. The machine's cores
are shared out so that no configuration oversubscribes them: one worker gets them all,
two get half each (``VS_COREML_ESRGAN_WORKER_THREADS``; one task thread per worker).
Configurations alternate (A B C A B C ...) and the median of each is reported, because
a shared machine's speed drifts.

    python scripts/bench_cluster.py             # 3 clips of 48 frames, 320x180, 2 segments
    python scripts/bench_cluster.py --clips 4 --frames 96 --rounds 3 --size 640x360
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = str(Path(sys.executable).parent / "vs-coreml-esrgan")


def make_batch(folder: Path, clips: int, size: str, frames: int, fps: int = 24) -> int:
    """``clips`` files of ``frames`` frames each, with AAC audio; returns all frames."""
    from vs_coreml_esrgan.job.media import find_ffmpeg

    folder.mkdir(parents=True, exist_ok=True)
    seconds = frames / fps
    for k in range(clips):
        subprocess.run([find_ffmpeg(), "-v", "error", "-y", "-f", "lavfi", "-i",
                        f"testsrc2=size={size}:rate={fps}:duration={seconds}", "-f", "lavfi",
                        "-i", f"sine=frequency={300 + 100 * k}:duration={seconds}",
                        "-c:v", "libx264", "-c:a", "aac", str(folder / f"clip{k:02d}.mkv")],
                       check=True)
    return clips * frames


def random_compact(path: Path) -> Path:
    """realesr-animevideov3's shape (64 features, 16 convolutions, x4), random weights."""
    import torch
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(0)
    network = Compact(num_feat=64, num_conv=16, upscale=4)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.mul_(0.5)
    torch.save(network.state_dict(), path)
    return path


def run_batch(inputs: Path, out: Path, model: str, chunks: int, address: str | None
              ) -> tuple[float, str]:
    """Wall seconds of one batch run, and the summary's segment line (who computed)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    command = [CLI, "upscale", str(inputs), "-o", str(out), "--model", model, "--chunks",
               str(chunks)]
    if address:
        command += ["--cluster", address]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"the batch failed ({' '.join(command)}):\n{result.stdout}"
                         f"{result.stderr[-3000:]}")
    split = next((line for line in result.stdout.splitlines()
                  if line.startswith("segments computed")), "")
    return wall, re.sub(r" \(tcp://[^)]*\) (\d+)", r": \1",
                        split.removeprefix("segments computed: "))


class Farm:
    """A LocalCluster of ``workers`` processes sharing ``cores`` compute threads."""

    def __init__(self, workers: int, cores: int) -> None:
        self.workers, self.threads = workers, max(1, cores // workers)

    def __enter__(self) -> str:
        from distributed import LocalCluster

        self.cluster = LocalCluster(
            n_workers=self.workers, threads_per_worker=1, processes=True,
            dashboard_address=":0",
            env={"VS_COREML_ESRGAN_WORKER_THREADS": str(self.threads)})
        return self.cluster.scheduler_address

    def __exit__(self, *exc) -> None:
        self.cluster.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=3)
    parser.add_argument("--frames", type=int, default=48, help="frames per clip")
    parser.add_argument("--size", default="320x180", help="WxH of the clips")
    parser.add_argument("--chunks", type=int, default=2, help="segments per clip")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", help="model name or file (default: random weights of "
                        "realesr-animevideov3's shape)")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1,
                        help="cores to share out (default: all of this machine's)")
    parser.add_argument("--no-local", action="store_true", help="leave out the run "
                        "without a cluster")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as work:
        work = Path(work)
        total = make_batch(work / "in", args.clips, args.size, args.frames)
        model = args.model or str(random_compact(work / "random-compact.pth"))
        configs = ([] if args.no_local else [("local (no cluster)", None)]) + \
            [(f"{n} worker{'s' if n > 1 else ''} x {max(1, args.cores // n)} threads", n)
             for n in (1, 2)]
        walls: dict[str, list[float]] = {label: [] for label, _ in configs}
        splits: dict[str, str] = {}
        # The farms stay up across rounds (started once, like a real one); the runs
        # alternate so that drift hits every configuration alike.
        with contextlib.ExitStack() as farms:
            addresses = {n: farms.enter_context(Farm(n, args.cores)) for _, n in configs
                         if n}
            for round_ in range(args.rounds):
                for label, n in configs:
                    wall, split = run_batch(work / "in", work / "out", model, args.chunks,
                                            addresses.get(n))
                    walls[label].append(wall)
                    splits[label] = split
                    print(f"round {round_ + 1}: {label}: {wall:.1f} s", file=sys.stderr)

    print(f"batch: {args.clips} clips x {args.frames} frames, {args.size} x4 -> "
          f"{args.chunks} segments each, {total} frames; model "
          f"{args.model or 'random-compact'}; {args.cores} cores; {args.rounds} rounds "
          f"(median); {platform.platform()}, {platform.processor() or platform.machine()}")
    print()
    print("| configuration | wall s (median) | fps | speed-up vs 1 worker | segments per "
          "worker |")
    print("|---|---|---|---|---|")
    one = next((statistics.median(walls[label]) for label, n in configs if n == 1), None)
    for label, _ in configs:
        wall = statistics.median(walls[label])
        speedup = f"{one / wall:.2f}x" if one else "-"
        print(f"| {label} | {wall:.1f} | {total / wall:.2f} | {speedup} | "
              f"{splits[label] or '-'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
