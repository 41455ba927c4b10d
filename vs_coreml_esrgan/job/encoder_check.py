"""Checks of an encoder request before any work: the options against the encoder table,
the ffmpeg in use against the encoder's name, and a hardware encoder against its device
(a two-frame trial at the job's output size)."""

from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path

from .encoders import ENCODERS, Encoder
from .media import JobError


def encoder_named(name: str) -> Encoder:
    encoder = ENCODERS.get(name)
    if encoder is None:
        raise JobError(f"encoder must be one of {', '.join(ENCODERS)}, got {name}")
    return encoder


def check_options(encoder: Encoder, suffix: str, bits: int | None, crf: int | None,
                  quality: int | None, preset: str | None) -> int | None:
    """The quality value the request asks for (None: the encoder's default). Raises
    JobError naming the option, what the encoder takes and what was given."""
    name = encoder.name
    if suffix.lower() not in encoder.containers:
        raise JobError(f"encoder {name} cannot write {suffix} files; use "
                       f"{', '.join(encoder.containers)}")
    if bits is not None and bits not in encoder.depths:
        raise JobError(f"encoder {name} takes bit depth "
                       f"{' or '.join(map(str, encoder.depths))}, not {bits}")
    if crf is not None and quality is not None:
        raise JobError("give --crf or --quality, not both (they set the same thing)")
    value = quality if quality is not None else crf
    flag = "--quality" if quality is not None else "--crf"
    if value is not None:
        scale = encoder.quality
        if scale is None:
            raise JobError(f"encoder {name} is not set by quality: it has no {flag} "
                           "(leave it out)")
        if flag == "--crf" and not scale.crf_like:
            raise JobError(f"encoder {name}'s quality runs the other way from a CRF "
                           f"({scale.text()}); give it as --quality")
        if not scale.low <= value <= scale.high:
            raise JobError(f"{flag} for {name} must be {scale.low} to {scale.high} "
                           f"({'higher' if scale.higher_is_better else 'lower'} is "
                           f"better), got {value}")
    if preset is not None:
        if not encoder.presets:
            raise JobError(f"encoder {name} has no --preset")
        if preset not in encoder.presets:
            hint = encoder.preset_hint or f"--preset {', '.join(encoder.presets)}"
            raise JobError(f"encoder {name} takes {hint}; got --preset {preset}")
    return value


@lru_cache(maxsize=8)
def _encoders_of(ffmpeg: str, mtime: float) -> frozenset[str]:
    try:
        result = subprocess.run([ffmpeg, "-hide_banner", "-encoders"], capture_output=True,
                                text=True, errors="replace", timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise JobError(f"cannot ask {ffmpeg} for its encoders: {exc}") from None
    names = set()
    for line in result.stdout.splitlines():
        fields = line.split()
        # "V....D libx264   libx264 H.264 ...": a capability column, then the name
        if len(fields) >= 2 and len(fields[0]) == 6 and fields[0][0] in "VAS":
            names.add(fields[1])
    return frozenset(names)


def ffmpeg_encoders(ffmpeg: str) -> frozenset[str]:
    """The encoder names ``ffmpeg -encoders`` lists (cached per binary and version)."""
    try:
        mtime = Path(ffmpeg).stat().st_mtime
    except OSError:
        mtime = 0.0
    return _encoders_of(ffmpeg, mtime)


def check_available(ffmpeg: str, encoder: Encoder) -> None:
    """Raises JobError when the ffmpeg in use does not list the encoder."""
    have = ffmpeg_encoders(ffmpeg)
    if encoder.codec in have:
        return
    known = [e.name for e in ENCODERS.values() if e.codec in have]
    where = f" ({encoder.hardware})" if encoder.hardware else ""
    raise JobError(f"encoder {encoder.name}{where} is not in the ffmpeg at {ffmpeg} "
                   f"(`{ffmpeg} -encoders` does not list {encoder.codec}); of this job's "
                   f"encoders it has: {', '.join(known) or 'none'}")


def trial_encode(ffmpeg: str, encoder: Encoder, video_args: list[str], size: tuple[int, int],
                 y4m_format: str) -> None:
    """Encode two frames at the job's output size with the job's own options; raises
    JobError with ffmpeg's message when the encoder cannot open (no device or driver, a
    size or option the hardware refuses). For hardware encoders only: a listed one may
    still have no device behind it."""
    width, height = size
    command = [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-f", "lavfi",
               "-i", f"color=c=gray:size={width}x{height}:rate=25,format={y4m_format}",
               "-frames:v", "2", *video_args, "-f", "null", "-"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, errors="replace",
                                timeout=120)
    except subprocess.TimeoutExpired:
        raise JobError(f"encoder {encoder.name} did not open within 120 s "
                       f"(a {width}x{height} trial with {ffmpeg})") from None
    if result.returncode != 0:
        cause = "\n".join(result.stderr.strip().splitlines()[:3])  # the rest follows from it
        raise JobError(f"encoder {encoder.name} ({encoder.hardware}) is listed by {ffmpeg} "
                       f"but cannot encode {width}x{height} here:\n{cause}")
