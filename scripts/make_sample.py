"""Make samples/sample.mp4: a short, small clip with an audio track.

Everything in it is synthesised by ffmpeg's own generators (a Mandelbrot zoom with a
moving test pattern inset, and a sine tone), so the project may redistribute it.
Run: python scripts/make_sample.py [OUTPUT]   (needs imageio-ffmpeg or ffmpeg on PATH)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

WIDTH, HEIGHT, FPS, SECONDS = 320, 180, 24, 2


def ffmpeg_exe() -> str:
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def main() -> int:
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else (
        Path(__file__).resolve().parent.parent / "samples" / "sample.mp4")
    video = (f"mandelbrot=size={WIDTH}x{HEIGHT}:rate={FPS}:start_scale=0.6:end_scale=0.3,"
             f"format=yuv420p[bg];testsrc2=size=128x72:rate={FPS}[fg];"
             "[bg][fg]overlay=x='16+t*40':y=16,format=yuv420p[v]")
    command = [
        ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={SECONDS}",
        "-filter_complex", video,
        "-map", "[v]", "-map", "0:a", "-t", str(SECONDS),
        "-c:v", "libx264", "-crf", "20", "-preset", "slow",
        "-color_primaries", "bt709", "-color_trc", "bt709", "-colorspace", "bt709",
        "-c:a", "aac", "-b:a", "64k", "-movflags", "+faststart", str(target),
    ]
    subprocess.run(command, check=True)
    print(target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
