"""Make the bundled samples from a public-domain photograph.

- samples/sample.mp4: 2 s, 320x180, 24 fps, H.264 + AAC: a slow pan and zoom over NASA's
  portrait of astronaut Eileen Collins (public domain, shipped in scikit-image as
  ``skimage/data/astronaut.png``) with a 440 Hz tone as its audio track.
- tests/data/photo.npy: a 96x96 RGB crop of the same photograph, for tests that need a
  natural image.

Run: python scripts/make_sample.py   (needs pip access to PyPI once, and ffmpeg on PATH
or the imageio-ffmpeg package). The photograph is taken from the scikit-image wheel
without installing it.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from vs_coreml_esrgan.job.media import find_ffmpeg

ROOT = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT, FPS, SECONDS = 320, 180, 24, 2
SKIMAGE = "scikit-image==0.26.0"
MEMBER = "skimage/data/astronaut.png"


def fetch_photo(directory: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary",
                    ":all:", "-q", "-d", str(directory), SKIMAGE], check=True)
    wheel = next(directory.glob("scikit_image-*.whl"))
    target = directory / "astronaut.png"
    with zipfile.ZipFile(wheel) as archive:
        target.write_bytes(archive.read(MEMBER))
    return target


def make_clip(photo: Path, target: Path) -> None:
    frames = FPS * SECONDS
    # A 16:9 band of the portrait (head and shoulders), upsampled so the motion is smooth,
    # zoomed in slowly towards the face while panning a little.
    video = (f"[0:v]scale=1280:1280,crop=1280:720:0:60,zoompan=z='1+0.4*on/{frames}':"
             f"x='(iw-iw/zoom)/2-40+on':y='(ih-ih/zoom)/3':d={frames}:"
             f"s={WIDTH}x{HEIGHT}:fps={FPS},format=yuv420p[v]")
    subprocess.run([
        find_ffmpeg(), "-hide_banner", "-loglevel", "error", "-y",
        "-loop", "1", "-i", str(photo),
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={SECONDS}",
        "-filter_complex", video, "-map", "[v]", "-map", "1:a", "-t", str(SECONDS),
        "-c:v", "libx264", "-crf", "18", "-preset", "slow",
        "-color_primaries", "bt709", "-color_trc", "bt709", "-colorspace", "bt709",
        "-c:a", "aac", "-b:a", "64k", "-movflags", "+faststart", str(target)], check=True)


def make_crop(photo: Path, target: Path) -> None:
    raw = subprocess.run([
        find_ffmpeg(), "-hide_banner", "-loglevel", "error", "-i", str(photo),
        "-vf", "scale=256:256:flags=area,crop=96:96:90:40", "-f", "rawvideo",
        "-pix_fmt", "rgb24", "-"], check=True, capture_output=True).stdout
    pixels = np.frombuffer(raw, np.uint8).reshape(96, 96, 3).transpose(2, 0, 1)
    np.save(target, np.ascontiguousarray(pixels))


def main() -> int:
    with tempfile.TemporaryDirectory() as temporary:
        photo = fetch_photo(Path(temporary))
        clip = ROOT / "samples" / "sample.mp4"
        make_clip(photo, clip)
        crop = ROOT / "tests" / "data" / "photo.npy"
        crop.parent.mkdir(exist_ok=True)
        make_crop(photo, crop)
    print(clip)
    print(crop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
