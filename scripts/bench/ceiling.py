"""The pipeline's ceiling: everything the filter does around the network, timed with a
network that costs nothing.

An instant backend (it returns a ready array of the right shape, float16 or float32 as
its tiles) runs through ``vs_coreml_esrgan.filter.apply_backend(clip, backend, plan,
batch=1)`` with the tile plan the filter makes (tiles of at most 512, overlap 16), on
blank clips of each format, frames fetched as vspipe does with ``--vs-threads`` threads
(default 2). Beside it, the floor: one copy of the output frame (numpy, one thread).

    python scripts/bench.py --ceiling                       # every case, this checkout
    python scripts/bench.py --ceiling --against 0e56f30     # alternating with that commit

With ``--against``, each round runs this checkout's pipeline and the commit's (a ``git
archive`` of its package) in fresh child processes, in alternating order, with the same
measuring code; medians, spreads (min-max over rounds) and the ratios are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench import common

SIZES = {"480p": (720, 480, 4), "720p": (1280, 720, 4), "1080p": (1920, 1080, 2)}
FORMATS = ("YUV420P8", "YUV420P10", "RGB24", "RGBH", "RGBS")
TILES = ("f16", "f32")
AGAINST_CASES = "720p:YUV420P8:f16,720p:YUV420P8:f32,1080p:YUV420P10:f16"
OVERLAP = 16


@dataclass(frozen=True)
class Case:
    size: str
    format: str
    tiles: str

    @classmethod
    def parse(cls, text: str) -> Case:
        size, fmt, tiles = text.split(":")
        if size not in SIZES or fmt not in FORMATS or tiles not in TILES:
            raise ValueError(f"case {text!r}: expected SIZE:FORMAT:TILES with SIZE in "
                             f"{list(SIZES)}, FORMAT in {list(FORMATS)}, TILES in {TILES}")
        return cls(size, fmt, tiles)

    def __str__(self) -> str:
        width, height, scale = SIZES[self.size]
        return f"{width}x{height} -> x{scale} {self.format}, {self.tiles} tiles"

    @property
    def key(self) -> str:
        return f"{self.size}:{self.format}:{self.tiles}"


class InstantBackend:
    """A backend whose network costs nothing: every call returns the same ready
    ``(batch, 3, th * scale, tw * scale)`` array (values in [-0.02, 1.02], so clamping
    does real work), of its input dtype."""

    name = "instant"

    def __init__(self, scale: int, dtype: np.dtype, tile: tuple[int, int], batch: int = 1):
        self.scale = scale
        self.input_dtype = np.dtype(dtype)
        rng = np.random.default_rng(0)
        shape = (batch, 3, tile[1] * scale, tile[0] * scale)
        self._out = rng.uniform(-0.02, 1.02, shape).astype(self.input_dtype)

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        return self._out


def measure(case: Case, frames: int, vs_threads: int) -> tuple[float, float]:
    """Wall seconds and CPU seconds (all threads, user + system) per frame of ``case``
    through apply_backend (after warm-up frames). CPU time is the work done, which other
    processes on a shared machine disturb less than the wall time."""
    import resource

    import vapoursynth as vs

    from vs_coreml_esrgan import choose_tile_size, plan_tiles
    from vs_coreml_esrgan.filter import apply_backend

    core = vs.core
    core.num_threads = vs_threads
    width, height, scale = SIZES[case.size]
    length = common.WARM_UP_FRAMES + frames
    clip = core.std.BlankClip(format=getattr(vs, case.format), width=width, height=height,
                              length=length, keep=True)
    tile = choose_tile_size(width, height, OVERLAP)
    plan = plan_tiles(width, height, tile, OVERLAP, scale)
    backend = InstantBackend(scale, np.float16 if case.tiles == "f16" else np.float32, tile)
    out = apply_backend(clip, backend, plan, batch=1)
    common.fetch(out, 0, common.WARM_UP_FRAMES)
    before = resource.getrusage(resource.RUSAGE_SELF)
    wall, _ = common.timed_fetch(out, common.WARM_UP_FRAMES, length)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return wall / frames, cpu / frames


def floor(case: Case, repeats: int = 5) -> float:
    """Seconds for one copy of the output frame's planes (numpy, one thread): the least
    any pipeline writing that frame must spend."""
    import vapoursynth as vs

    width, height, scale = SIZES[case.size]
    fmt = vs.core.get_video_format(getattr(vs, case.format))
    dtype = {1: np.uint8, 2: np.float16 if fmt.sample_type == vs.FLOAT else np.uint16,
             4: np.float32}[fmt.bytes_per_sample]
    shapes = [(height * scale, width * scale)] + [
        (height * scale >> fmt.subsampling_h, width * scale >> fmt.subsampling_w)
    ] * (fmt.num_planes - 1)
    sources = [np.ones(shape, dtype) for shape in shapes]
    targets = [np.empty(shape, dtype) for shape in shapes]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for source, target in zip(sources, targets, strict=True):
            np.copyto(target, source)
        times.append(time.perf_counter() - start)
    return min(times)


def _child(job: dict) -> list[dict]:
    rows = []
    for key in job["cases"]:
        wall, cpu = measure(Case.parse(key), job["frames"], job["vs_threads"])
        rows.append({"case": key, "s_per_frame": wall, "cpu_per_frame": cpu})
    return rows


def _run_child(package_root: Path, job: dict) -> dict[str, tuple[float, float]]:
    """Run the cases in a fresh process importing vs_coreml_esrgan from package_root."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(package_root), str(common.ROOT / "scripts")])
    result = subprocess.run([sys.executable, "-m", "bench.ceiling", "--child",
                             json.dumps(job)], env=env, capture_output=True, text=True,
                            check=False, cwd=tempfile.gettempdir())
    if result.returncode != 0:
        raise RuntimeError(f"child on {package_root} failed:\n{result.stderr[-3000:]}")
    return {row["case"]: (row["s_per_frame"], row["cpu_per_frame"])
            for row in json.loads(result.stdout)}


def _archive(commit: str, into: Path) -> Path:
    """The commit's vs_coreml_esrgan package, unpacked into ``into``."""
    tar = into / "package.tar"
    subprocess.run(["git", "-C", str(common.ROOT), "archive", "-o", str(tar), commit,
                    "vs_coreml_esrgan"], check=True)
    with tarfile.open(tar) as archive:
        archive.extractall(into, filter="data")
    return into


Rounds = dict[str, dict[str, list[tuple[float, float]]]]  # pipeline -> case -> (wall, cpu)


def run(cases: list[Case], frames: int, rounds: int, vs_threads: int,
        against: str | None) -> str:
    """Measure and return the markdown report."""
    job = {"cases": [c.key for c in cases], "frames": frames, "vs_threads": vs_threads}
    runs: Rounds = {"new": {c.key: [] for c in cases}}
    with tempfile.TemporaryDirectory() as work:
        roots = {"new": common.ROOT}
        if against:
            roots["old"] = _archive(against, Path(work))
            runs["old"] = {c.key: [] for c in cases}
        for round_index in range(rounds):
            order = list(roots) if round_index % 2 == 0 else list(reversed(roots))
            for name in order:
                for key, seconds in _run_child(roots[name], job).items():
                    runs[name][key].append(seconds)
                print(f"round {round_index + 1}/{rounds} {name} done", file=sys.stderr,
                      flush=True)
    return _report(cases, runs, frames, rounds, vs_threads, against)


def _ms(values: list[float]) -> str:
    """'median (min-max)' in milliseconds."""
    median, low, high = common.median_spread(values)
    return f"{median * 1000:.0f} ({low * 1000:.0f}-{high * 1000:.0f})"


def _report(cases: list[Case], runs: Rounds, frames: int, rounds: int, vs_threads: int,
            against: str | None) -> str:
    rows = []
    for case in cases:
        wall = [w for w, _ in runs["new"][case.key]]
        cpu = [c for _, c in runs["new"][case.key]]
        median = common.median_spread(wall)[0]
        floor_ms = floor(case) * 1000
        row = [str(case), _ms(wall), f"{1 / median:.1f}", _ms(cpu), f"{floor_ms:.1f}",
               f"{median * 1000 / floor_ms:.1f}x"]
        if against:
            old_wall = [w for w, _ in runs["old"][case.key]]
            old_cpu = [c for _, c in runs["old"][case.key]]
            row[1:1] = [_ms(old_wall)]
            row[4:4] = [_ms(old_cpu)]
            ratio, low, high = common.median_spread(
                [o / n for o, n in zip(old_wall, wall, strict=True)])
            row.append(f"{ratio:.2f}x ({low:.2f}-{high:.2f})")
            row.append(f"{min(old_wall) / min(wall):.2f}x")
            ratio, low, high = common.median_spread(
                [o / n for o, n in zip(old_cpu, cpu, strict=True)])
            row.append(f"{ratio:.2f}x ({low:.2f}-{high:.2f})")
        rows.append(row)
    header = ["frame", "ms/frame", "fps", "CPU ms/frame", "floor ms", "to floor"]
    if against:
        header = ["frame", f"{against} ms/frame", "this ms/frame", "fps",
                  f"{against} CPU ms/frame", "this CPU ms/frame", "floor ms", "to floor",
                  "speed-up", "fastest / fastest", "CPU speed-up"]
    method = (f"Instant backend through apply_backend(batch=1), tiles of at most 512 with "
              f"overlap {OVERLAP}, blank clips, {vs_threads} VapourSynth threads, "
              f"{common.WARM_UP_FRAMES} warm-up + {frames} timed frames per case and round, "
              f"{rounds} rounds, each in a fresh process"
              + (", the two pipelines alternating (order swapped every round)"
                 if against else "")
              + ". Times: median (min-max) over the rounds; ms/frame is wall time, CPU "
              "ms/frame the process's user + system time (all threads) per frame"
              + ("; speed-up and CPU speed-up: the median (min-max) of the rounds' ratios; "
                 "fastest / fastest: the ratio of each pipeline's fastest round (the least "
                 "disturbed by other work)" if against else "")
              + ". Floor: one numpy copy of the output frame's planes, one thread; to "
              f"floor: ms/frame / floor. Machine: {common.machine()}.")
    return f"{common.markdown_table(header, rows)}\n\n{method}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", help="comma-separated SIZE:FORMAT:TILES (SIZE 480p, "
                        "720p, 1080p; FORMAT " + ", ".join(FORMATS) + "; TILES f16, f32); "
                        "default: all, or with --against " + AGAINST_CASES)
    parser.add_argument("--against", metavar="COMMIT",
                        help="alternate with this commit's pipeline (e.g. 0e56f30)")
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--vs-threads", type=int, default=2)
    parser.add_argument("--out", help="also write the markdown report here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return 0
    if args.cases:
        cases = [Case.parse(text) for text in args.cases.split(",")]
    elif args.against:
        cases = [Case.parse(text) for text in AGAINST_CASES.split(",")]
    else:
        cases = [Case(s, f, t) for s in SIZES for f in FORMATS for t in TILES]
    text = run(cases, args.frames, args.rounds, args.vs_threads, args.against)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
