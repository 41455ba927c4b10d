"""The enabled flag of subtitle tracks in an MP4 / QuickTime file, set after muxing.

ffmpeg's mov muxer enables the first track of each type when no track of that type is
marked default (libavformat/movenc.c, ``enable_tracks``), so subtitles a source had off
would be shown. This clears the flag again in the track header (ISO/IEC 14496-12: a
``tkhd`` box's flags, bit 0 ``track_enabled``), in place; nothing else changes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

_SUBTITLE_HANDLERS = {b"sbtl", b"text", b"subt"}  # mov_text (mp4 / mov), tx3g, others
_ENABLED = 0x000001


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, box end) of each box between ``start`` and ``end``."""
    position = start
    while position + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, position)
        header = 8
        if size == 1:
            size, header = struct.unpack_from(">Q", data, position + 8)[0], 16
        elif size == 0:
            size = end - position
        if size < header or position + size > end:
            return
        yield kind, position + header, position + size
        position += size


def _moov(path: Path) -> tuple[int, bytes] | None:
    """(file offset, bytes) of the top-level ``moov`` box, read without the media data."""
    with path.open("rb") as file:
        position = 0
        while header := file.read(16):
            if len(header) < 8:
                return None
            size, kind = struct.unpack_from(">I4s", header)
            if size == 1 and len(header) >= 16:
                size = struct.unpack_from(">Q", header, 8)[0]
            elif size == 0:
                size = path.stat().st_size - position
            if size < 8:
                return None
            if kind == b"moov":
                file.seek(position)
                return position, file.read(size)
            position += size
            file.seek(position)
    return None


def set_subtitle_tracks_enabled(path: Path, enabled: list[bool]) -> None:
    """Set the enabled flag of the file's subtitle tracks, in their order, to ``enabled``
    (tracks past its end are left as they are)."""
    found = _moov(path)
    if found is None:
        return
    offset, moov = found
    patches = []
    subtitle = 0
    for kind, start, end in _boxes(moov, 8, len(moov)):
        if kind != b"trak":
            continue
        tkhd = handler = None
        for inner, inner_start, inner_end in _boxes(moov, start, end):
            if inner == b"tkhd":
                tkhd = inner_start
            elif inner == b"mdia":
                for box, box_start, _ in _boxes(moov, inner_start, inner_end):
                    if box == b"hdlr":
                        handler = moov[box_start + 8:box_start + 12]
        if tkhd is None or handler not in _SUBTITLE_HANDLERS:
            continue
        if subtitle < len(enabled):
            flags = int.from_bytes(moov[tkhd + 1:tkhd + 4], "big")
            flags = flags | _ENABLED if enabled[subtitle] else flags & ~_ENABLED
            patches.append((offset + tkhd + 1, flags.to_bytes(3, "big")))
        subtitle += 1
    with path.open("r+b") as file:
        for position, data in patches:
            file.seek(position)
            file.write(data)
