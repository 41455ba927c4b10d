"""Benchmark: frames/s of each encoder the job offers and this ffmpeg has, at the job's
output sizes, so one can tell whether the encoder or the network limits a job.

Method: a clip shaped like an upscale (samples/sample.mp4 scaled with Lanczos to each
size) is written once per size and pixel format as a y4m file (what vspipe hands ffmpeg),
then ``ffmpeg -f yuv4mpegpipe -i FILE <the job's encoder options> -f null -`` is timed
for each encoder: wall time from start to exit, so the encoder's start-up is included
(about a second for the slow ones, small beside the frames at these sizes). Rounds
alternate the encoders (A B C ... A B C ...) so a change in the machine's load falls on
all of them; the median of the rounds is reported with the spread (min-max) and the
ratio to x264 (the default encoder) from the same rounds. Hardware encoders are measured
where a two-frame trial opens them.

    python scripts/bench.py --encoder-speed                   # 3840x2160 and 5120x2880
    python scripts/bench.py --encoder-speed --sizes 1920x1080 --frames 8 --rounds 3
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

from vs_coreml_esrgan.job.encoder_check import ffmpeg_encoders  # noqa: E402
from vs_coreml_esrgan.job.encoders import ENCODERS, Encoder  # noqa: E402
from vs_coreml_esrgan.job.media import find_ffmpeg  # noqa: E402

SAMPLE = ROOT / "samples" / "sample.mp4"


def y4m_format(encoder: Encoder) -> str:
    """The y4m pixel format a job hands this encoder: 4:2:0 8-bit where it takes that (the
    usual SDR source), else its own layout at its lowest depth (ProRes: 4:2:2 10-bit)."""
    layout = "420" if "420" in encoder.layouts else encoder.layouts[0]
    bits = 8 if 8 in encoder.depths else min(encoder.depths)
    return f"yuv{layout}p" + ("" if bits == 8 else f"{bits}le")


def encoder_args(encoder: Encoder) -> list[str]:
    """The job's options for this encoder at its defaults (no preset: the job's default)."""
    layout = "420" if "420" in encoder.layouts else encoder.layouts[0]
    bits = 8 if 8 in encoder.depths else min(encoder.depths)
    filters = encoder.upload_filter(layout, bits)
    return [*(["-vf", filters.lstrip(",")] if filters else []),
            *encoder.codec_args(layout, bits, None, None, ".mkv")]


def opens(ffmpeg: str, encoder: Encoder, size: tuple[int, int]) -> str | None:
    """None when the encoder encodes two frames at ``size`` here, else ffmpeg's reason."""
    command = [ffmpeg, "-v", "error", "-f", "lavfi", "-i",
               f"color=size={size[0]}x{size[1]}:rate=25,format={y4m_format(encoder)}",
               "-frames:v", "2", *encoder_args(encoder), "-f", "null", "-"]
    result = subprocess.run(command, capture_output=True, text=True, errors="replace")
    return None if result.returncode == 0 else (result.stderr.strip().splitlines() or
                                                ["failed"])[0]


def make_clip(ffmpeg: str, size: tuple[int, int], pix_fmt: str, frames: int,
              path: Path) -> None:
    width, height = size
    subprocess.run([ffmpeg, "-v", "error", "-y", "-i", str(SAMPLE), "-frames:v", str(frames),
                    "-vf", f"scale={width}:{height}:flags=lanczos,format={pix_fmt}",
                    "-strict", "-1", "-f", "yuv4mpegpipe", str(path)], check=True)  # 10-bit y4m


def time_encode(ffmpeg: str, clip: Path, encoder: Encoder) -> float:
    """Seconds to encode the whole clip (process start to exit)."""
    start = time.perf_counter()
    subprocess.run([ffmpeg, "-v", "error", "-nostdin", "-f", "yuv4mpegpipe", "-i",
                    str(clip), *encoder_args(encoder), "-f", "null", "-"], check=True)
    return time.perf_counter() - start


def measure(ffmpeg: str, names: list[str], sizes: list[tuple[int, int]], frames: int,
            rounds: int, work: Path) -> dict[tuple[str, tuple[int, int]], list[float]]:
    """frames/s per (encoder, size), one value per round."""
    results: dict[tuple[str, tuple[int, int]], list[float]] = {}
    for size in sizes:
        clips = {}
        for name in names:
            fmt = y4m_format(ENCODERS[name])
            if fmt not in clips:
                clips[fmt] = work / f"{size[0]}x{size[1]}-{fmt}.y4m"
                make_clip(ffmpeg, size, fmt, frames, clips[fmt])
        for round_ in range(rounds):
            order = names if round_ % 2 == 0 else names[::-1]
            for name in order:
                encoder = ENCODERS[name]
                seconds = time_encode(ffmpeg, clips[y4m_format(encoder)], encoder)
                results.setdefault((name, size), []).append(frames / seconds)
                print(f"  {name} {size[0]}x{size[1]} round {round_ + 1}: "
                      f"{frames / seconds:.2f} frames/s", file=sys.stderr)
        for clip in clips.values():
            clip.unlink()
    return results


def report(results: dict[tuple[str, tuple[int, int]], list[float]], names: list[str],
           sizes: list[tuple[int, int]], frames: int, rounds: int,
           skipped: dict[str, str], ffmpeg: str) -> str:
    version = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True
                             ).stdout.splitlines()[0]
    lines = [f"# Encoder speed ({datetime.date.today()})", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}; "
             f"{version}.",
             f"{frames} frames per run, {rounds} alternating rounds; median frames/s "
             "(min-max); ratio: the median of the per-round ratios to x264.", "",
             "| encoder | options | size | frames/s | spread | x264 = 1 |",
             "|---|---|---|---|---|---|"]
    for size in sizes:
        base = results.get(("x264", size))
        for name in names:
            values = results[(name, size)]
            ratio = (f"{statistics.median(v / b for v, b in zip(values, base, strict=True)):.2f}"
                     if base else "")
            options = " ".join(encoder_args(ENCODERS[name]))
            lines.append(f"| {name} | `{options}` | {size[0]}x{size[1]} | "
                         f"{statistics.median(values):.2f} | {min(values):.2f}-"
                         f"{max(values):.2f} | {ratio} |")
    if skipped:
        lines += ["", "Not measured here:", *(f"- {name}: {why}" for name, why in skipped.items())]
    return "\n".join(lines) + "\n"


def _size(text: str) -> tuple[int, int]:
    width, height = text.lower().split("x")
    return int(width), int(height)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="3840x2160,5120x2880",
                        help="output sizes, comma-separated (default: a 2x and a 4x "
                        "upscale's: 3840x2160,5120x2880)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--encoders", help="comma-separated (default: every encoder the "
                        "job offers that this ffmpeg has and can open)")
    parser.add_argument("--ffmpeg", help="default: the one the job uses")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    args = parser.parse_args(argv)
    ffmpeg = args.ffmpeg or find_ffmpeg()
    sizes = [_size(s) for s in args.sizes.split(",")]
    have = ffmpeg_encoders(ffmpeg)
    wanted = args.encoders.split(",") if args.encoders else list(ENCODERS)
    names, skipped = [], {}
    for name in wanted:
        encoder = ENCODERS[name]
        if encoder.codec not in have:
            skipped[name] = "not in this ffmpeg's `-encoders`"
        elif why := opens(ffmpeg, encoder, max(sizes)):
            skipped[name] = why
        else:
            names.append(name)
    with tempfile.TemporaryDirectory(prefix="bench-encoders-") as work:
        results = measure(ffmpeg, names, sizes, args.frames, args.rounds, Path(work))
    text = report(results, names, sizes, args.frames, args.rounds, skipped, ffmpeg)
    print(text, end="")
    if args.out:
        args.out.write_text(text)
    return 0
