"""Generated media files shaped like real ones, and what a decoder says about outputs."""

from __future__ import annotations

import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np

from vs_coreml_esrgan.job.media import find_ffmpeg

FFMPEG = find_ffmpeg()
CLI = str(Path(sys.executable).parent / "vs-coreml-esrgan")
VIDEO = "testsrc2=size=64x48:rate=10"
# A non-periodic audio track: located by cross-correlation, it dates the audio by content.
NOISE = "anoisesrc=color=white:seed=7:sample_rate=48000:amplitude=0.5"


def ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-v", "error", "-y", *map(str, args)], check=True)


def job(*args, cwd: Path | None = None, env: dict | None = None, cli: str = CLI,
        preexec_fn=None) -> subprocess.CompletedProcess:
    return subprocess.run([cli, "upscale", *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=cwd, env=env, preexec_fn=preexec_fn)


def video_times(path: Path) -> list[Fraction]:
    """Each decoded frame's presentation time in seconds, in output order."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [frame.pts * stream.time_base for frame in container.decode(stream)]


def audio_track(path: Path) -> tuple[Fraction, np.ndarray]:
    """(time of the first decoded sample in seconds, mono samples at 48 kHz)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        start, chunks = None, []
        for frame in container.decode(stream):
            if start is None:
                start = frame.pts * frame.time_base
            data = frame.to_ndarray().astype(np.float64)  # planar: (channels, n)
            channels = len(frame.layout.channels)
            chunks.append(data[0] if frame.format.is_planar else data[0][::channels])
    return start, np.concatenate(chunks)


def lag(reference: np.ndarray, moved: np.ndarray) -> int:
    """Samples by which ``moved`` starts later in the content than ``reference`` does
    (positive: ``moved`` lacks the first ``lag`` samples), by cross-correlation."""
    size = 1 << int(np.ceil(np.log2(len(reference) + len(moved))))
    spectrum = np.fft.rfft(reference, size) * np.conj(np.fft.rfft(moved, size))
    correlation = np.fft.irfft(spectrum, size)
    best = int(np.argmax(correlation))
    return best if best < size // 2 else best - size


def av_offset(path: Path, reference_audio: tuple[Fraction, np.ndarray], frame: int = 0
              ) -> float:
    """Seconds between the output's video frame ``frame`` and the moment of the reference
    audio's first sample, located in the output's audio by its content."""
    start, samples = audio_track(path)
    _, reference = reference_audio
    shift = lag(reference, samples)
    content_zero = start - Fraction(shift, 48000)  # where reference sample 0 plays
    return float(video_times(path)[frame] - content_zero)


def stream_facts(path: Path) -> list[dict]:
    """Per stream: type, codec, pixel format, colour tags, SAR and tags, as PyAV reads
    them."""
    import av

    facts = []
    with av.open(str(path)) as container:
        for stream in container.streams:
            entry = {"type": stream.type, "codec": stream.codec_context.codec.canonical_name,
                     "metadata": {k.lower(): v for k, v in stream.metadata.items()}}
            if stream.type == "video":
                context = stream.codec_context
                entry.update(pix_fmt=context.pix_fmt, width=context.width,
                             colorspace=int(context.colorspace),
                             primaries=int(context.color_primaries),
                             transfer=int(context.color_trc), range=int(context.color_range),
                             sar=stream.sample_aspect_ratio)
            facts.append(entry)
    return facts


def environment_without_venv() -> dict[str, str]:
    """The environment with this venv's scripts directory off PATH."""
    scripts = str(Path(sys.executable).parent)
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p != scripts)
    return env


def children(pid: int) -> list[int]:
    """The process ids whose parent is ``pid`` (Linux: read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def tiny_model(directory: Path) -> Path:
    """A tiny random x2 compact network saved in ``directory``: for tests about files and
    processes, not speed."""
    import torch
    from conftest import compact, random_network

    path = directory / "x2.pth"
    torch.save(random_network(compact(scale=2, num_conv=2, num_feat=8)).state_dict(), path)
    return path
