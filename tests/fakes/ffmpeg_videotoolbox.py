"""Test double of an ffmpeg built with VideoToolbox (as Homebrew's and imageio-ffmpeg's
macOS builds are), for Linux: ``-encoders`` answers the real list plus
``hevc_videotoolbox``; any other call runs the real ffmpeg (``$REAL_FFMPEG``) with
``hevc_videotoolbox`` replaced by libx265, its quality ``-q:v Q`` (1-100, higher is
better) translated to ``-crf round((100 - Q) * 51 / 100)`` and its 10-bit input p010le to
the planar yuv420p10le libx265 takes. Each call's arguments are
appended, one JSON list a line, to ``$FAKE_FFMPEG_LOG`` when set.

The line added to ``-encoders`` is FFmpeg's own for the encoder
(libavcodec/videotoolboxenc.c: ``CODEC_LONG_NAME("VideoToolbox H.265 Encoder")``,
capabilities delay and hardware)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

LISTED = " V....D hevc_videotoolbox    VideoToolbox H.265 Encoder (codec hevc)\n"


def translate(args: list[str]) -> list[str]:
    out: list[str] = []
    items = iter(args)
    for arg in items:
        if arg == "hevc_videotoolbox":
            out.append("libx265")
        elif arg == "p010le":  # the same samples, in the planar layout libx265 takes
            out.append("yuv420p10le")
        elif arg == "-q:v":
            quality = int(next(items))
            out += ["-crf", str(round((100 - quality) * 51 / 100))]
        else:
            out.append(arg)
    return out


def main() -> int:
    real = os.environ["REAL_FFMPEG"]
    args = sys.argv[1:]
    log = os.environ.get("FAKE_FFMPEG_LOG")
    if log:
        with open(log, "a") as file:
            file.write(json.dumps(args) + "\n")
    if "-encoders" in args:
        listing = subprocess.run([real, *args], capture_output=True, text=True)
        sys.stdout.write(listing.stdout + LISTED)
        sys.stderr.write(listing.stderr)
        return listing.returncode
    os.execv(real, [real, *translate(args)])
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
