"""Variable frame rate through the pipe.

vspipe's y4m stream has one frame rate and no timestamps, so a variable-rate source would
come out constant-rate, each frame moved from its time. For such sources the job puts this
relay between vspipe and ffmpeg: it reads the y4m stream with PyAV and writes the same raw
frames, unchanged, as NUT packets stamped with their source frames' timestamps (in the
source's own time base); ffmpeg encodes them with ``-fps_mode passthrough``, so every frame
keeps its time. Run as ``python -m vs_coreml_esrgan.job.relay INDEX|VIDEO FIRST LAST``.
"""

from __future__ import annotations

import os
import sys
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

from .video_index import SourceError, VideoIndex, build_index


class RelayError(Exception):
    """The y4m stream does not hold the frames the relay was told to stamp."""


def stamps(index: VideoIndex, first: int, last: int) -> list[int]:
    """Timestamps of frames ``first``..``last`` (inclusive) in the index's time base, the
    first frame at 0 (ffmpeg would move it there anyway). Raises RelayError when the
    index has no such frames."""
    if not 0 <= first <= last < index.num_frames:
        raise RelayError(f"frames {first}-{last} are not in the index's 0-"
                         f"{index.num_frames - 1}")
    return [stamp - index.pts[first] for stamp in index.pts[first:last + 1]]


def relay(reader: BinaryIO, writer: BinaryIO, pts: list[int], time_base: Fraction,
          rate: Fraction) -> int:
    """Copy the y4m frames from ``reader`` to ``writer`` as NUT, frame ``k`` stamped
    ``pts[k]`` (``time_base`` units); ``rate`` is the stream's nominal (average) frame
    rate, what ffmpeg reports and gives the last frame (NUT keeps no packet durations).
    Returns the frames relayed.

    Raises RelayError when the stream holds more frames than timestamps; fewer frames (the
    producer stopped) end the output early, as a plain pipe would, and are counted."""
    import av

    with av.open(reader, mode="r", format="yuv4mpegpipe") as source, \
            av.open(writer, mode="w", format="nut") as sink:
        frames = source.streams.video[0]
        stream = sink.add_stream("rawvideo", rate=rate)
        context = frames.codec_context
        stream.width, stream.height, stream.pix_fmt = \
            context.width, context.height, context.pix_fmt
        stream.time_base = time_base
        count = 0
        for packet in source.demux(frames):
            if packet.size == 0:  # the demuxer's end-of-stream marker
                continue
            if count == len(pts):
                raise RelayError(f"the video has more than the {len(pts)} frames the job "
                                 "expected")
            packet.stream = stream
            packet.time_base = time_base
            packet.pts = packet.dts = pts[count]
            sink.mux(packet)
            count += 1
    return count


def command(index_file: Path, first: int, last: int) -> list[str]:
    """The relay as a process for ``vspipe ... | relay | ffmpeg -f nut -i - ...``;
    ``index_file`` is a saved :class:`VideoIndex` or the video file itself (then indexed
    first: one decoding pass). ``-P``: the package comes from where this interpreter
    finds it, never from a ``vs_coreml_esrgan`` folder in the working directory."""
    return [sys.executable, "-P", "-m", "vs_coreml_esrgan.job.relay", str(index_file),
            str(first), str(last)]


def _index(path: Path) -> VideoIndex:
    if path.suffix == ".json":
        return VideoIndex.load(path)
    return build_index(path)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        print("usage: python -m vs_coreml_esrgan.job.relay INDEX|VIDEO FIRST LAST",
              file=sys.stderr)
        return 2
    try:
        index = _index(Path(args[0]))
    except SourceError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return 1
    first, last = int(args[1]), int(args[2])
    import av

    try:
        pts = stamps(index, first, last)
        count = relay(sys.stdin.buffer, sys.stdout.buffer, pts, Fraction(*index.time_base),
                      Fraction(*index.fps))
    except KeyboardInterrupt:  # Ctrl-C reaches the whole pipeline; the job reports it
        return 130
    except (BrokenPipeError, av.error.PyAVCallbackError):
        _silence_stdout()
        print("relay: ffmpeg stopped reading the frames (its message says why)",
              file=sys.stderr)
        return 1
    except av.FFmpegError as exc:
        print(f"relay: the frames from vspipe cannot be read: {exc}", file=sys.stderr)
        return 1
    except RelayError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return 1
    if count != len(pts):
        print(f"relay: the video stopped after {count} of frames {first}-{last}",
              file=sys.stderr)
        return 1
    return 0


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush into a closed pipe does
    not add a second error."""
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, sys.stdout.fileno())
    os.close(null)


if __name__ == "__main__":
    sys.exit(main())
