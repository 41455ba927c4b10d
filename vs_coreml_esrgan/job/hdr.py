"""HDR10 static metadata: the mastering display's colour volume and the content light
levels, read from the source's first frame and handed to the encoder.

The y4m pipe carries no side data, so the encoder must be told. PyAV gives each as the
raw FFmpeg struct (libavutil/mastering_display_metadata.h): ``AVMasteringDisplayMetadata``
is ``AVRational display_primaries[3][2]`` (R, G, B; x, y), ``white_point[2]``,
``min_luminance``, ``max_luminance``, then ``int has_primaries, has_luminance``;
``AVContentLightMetadata`` is ``unsigned MaxCLL, MaxFALL``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

Point = tuple[Fraction, Fraction]


@dataclass(frozen=True)
class HdrMetadata:
    """Chromaticities as CIE 1931 x, y; luminance in cd/m². Either part may be absent."""

    red: Point | None = None
    green: Point | None = None
    blue: Point | None = None
    white: Point | None = None
    min_luminance: Fraction | None = None
    max_luminance: Fraction | None = None
    max_cll: int | None = None
    max_fall: int | None = None

    @property
    def has_primaries(self) -> bool:
        return None not in (self.red, self.green, self.blue, self.white)

    @property
    def has_luminance(self) -> bool:
        return None not in (self.min_luminance, self.max_luminance)

    def encoder_args(self, codec: str) -> list[str]:
        """ffmpeg options that make ``codec`` write this metadata ([] for other codecs)."""
        if codec == "libx265":
            return ["-x265-params", ":".join(self._x265())] if self._x265() else []
        if codec == "libsvtav1":
            return ["-svtav1-params", ":".join(self._svtav1())] if self._svtav1() else []
        return []

    def _x265(self) -> list[str]:
        """x265 wants chromaticities in 0.00002 and luminance in 0.0001 cd/m² steps."""
        params = []
        if self.has_primaries and self.has_luminance:
            def xy(p: Point) -> str:
                return f"({round(p[0] * 50000)},{round(p[1] * 50000)})"
            params.append(f"master-display=G{xy(self.green)}B{xy(self.blue)}R{xy(self.red)}"
                          f"WP{xy(self.white)}L({round(self.max_luminance * 10000)},"
                          f"{round(self.min_luminance * 10000)})")
        if self.max_cll is not None:
            params.append(f"max-cll={self.max_cll},{self.max_fall or 0}")
        return params

    def _svtav1(self) -> list[str]:
        """SVT-AV1 takes decimal values."""
        params = []
        if self.has_primaries and self.has_luminance:
            def xy(p: Point) -> str:
                return f"({float(p[0]):.5f},{float(p[1]):.5f})"
            params.append(f"mastering-display=G{xy(self.green)}B{xy(self.blue)}"
                          f"R{xy(self.red)}WP{xy(self.white)}"
                          f"L({float(self.max_luminance):.4f},{float(self.min_luminance):.4f})")
        if self.max_cll is not None:
            params.append(f"content-light={self.max_cll},{self.max_fall or 0}")
        return params


def parse_side_data(mastering: bytes | None, light: bytes | None) -> HdrMetadata | None:
    """HdrMetadata from the raw structs (None when neither says anything)."""
    fields: dict = {}
    if mastering is not None and len(mastering) >= 88:
        values = struct.unpack("<22i", mastering[:88])

        def ratio(i: int) -> Fraction | None:
            return Fraction(values[i], values[i + 1]) if values[i + 1] else None

        if values[20]:
            points = [(ratio(i), ratio(i + 2)) for i in (0, 4, 8, 12)]
            fields.update(red=points[0], green=points[1], blue=points[2], white=points[3])
        if values[21]:
            fields.update(min_luminance=ratio(16), max_luminance=ratio(18))
    if light is not None and len(light) >= 8:
        fields["max_cll"], fields["max_fall"] = struct.unpack("<2I", light[:8])
    return HdrMetadata(**fields) if fields else None


def read_hdr_metadata(path: Path) -> HdrMetadata | None:
    """The static HDR metadata on the first decoded frame of ``path``'s video, if any."""
    from av.sidedata.sidedata import Type

    from .video_index import open_media

    with open_media(path) as container:
        for frame in container.decode(container.streams.video[0]):
            found = {kind: bytes(memoryview(frame.side_data[kind]))
                     for kind in (Type.MASTERING_DISPLAY_METADATA, Type.CONTENT_LIGHT_LEVEL)
                     if kind in frame.side_data}
            return parse_side_data(found.get(Type.MASTERING_DISPLAY_METADATA),
                                   found.get(Type.CONTENT_LIGHT_LEVEL))
    return None
