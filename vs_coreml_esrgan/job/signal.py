"""The output's colour signal: what the script converts to and what ffmpeg tags.

Both come from one :class:`Signal`, so the tags always describe the pixels. Untagged
sources follow the convention players use: standard definition (up to 1024x576) is
BT.601, larger is BT.709.
"""

from __future__ import annotations

from dataclasses import dataclass

# H.273 code points -> ffmpeg's names (setparams); the first for the matrix also has the
# name VapourSynth's resize uses.
_MATRIX = {1: ("bt709", "709"), 4: ("fcc", "fcc"), 5: ("bt470bg", "470bg"),
           6: ("smpte170m", "170m"), 7: ("smpte240m", "240m"), 8: ("ycgco", "ycgco"),
           9: ("bt2020nc", "2020ncl"), 10: ("bt2020c", "2020cl"), 14: ("ictcp", "ictcp")}
_PRIMARIES = {1: "bt709", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m",
              8: "film", 9: "bt2020", 10: "smpte428", 11: "smpte431", 12: "smpte432",
              22: "jedec-p22"}
_TRANSFER = {1: "bt709", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m",
             8: "linear", 9: "log100", 10: "log316", 11: "iec61966-2-4", 12: "bt1361e",
             13: "iec61966-2-1", 14: "bt2020-10", 15: "bt2020-12", 16: "smpte2084",
             17: "smpte428", 18: "arib-std-b67"}
HDR_TRANSFERS = {16: "PQ (SMPTE 2084)", 18: "HLG (ARIB STD-B67)"}


def is_standard_definition(width: int, height: int) -> bool:
    """What players treat as SD when a file carries no matrix (mpv, VLC, browsers)."""
    return width <= 1024 and height <= 576


@dataclass(frozen=True)
class Signal:
    """Matrix, primaries and transfer as H.273 code points, and the range."""

    matrix: int
    primaries: int
    transfer: int
    full_range: bool

    @property
    def hdr(self) -> bool:
        return self.transfer in HDR_TRANSFERS

    @property
    def resize_matrix(self) -> str:
        return _MATRIX[self.matrix][1]

    def setparams(self) -> str:
        """ffmpeg's ``setparams`` options tagging frames with this signal. (Tags go through
        the filter: the ``-colorspace`` family of output options is overridden by the
        frames' own, unset, properties.)"""
        return (f"setparams=colorspace={_MATRIX[self.matrix][0]}:"
                f"color_primaries={_PRIMARIES[self.primaries]}:"
                f"color_trc={_TRANSFER[self.transfer]}:"
                f"range={'pc' if self.full_range else 'tv'}")


def output_signal(props: dict[str, int], width: int, height: int, rgb: bool) -> Signal:
    """The signal of the output for a source whose first frame has ``props``.

    A YUV source keeps its matrix, primaries, transfer and range; what it leaves
    unspecified (or uses a value ffmpeg cannot tag) follows the SD/HD convention: BT.601
    (SMPTE 170M, or BT.470BG primaries for 576 lines) for SD, BT.709 for HD. An RGB source
    becomes limited-range YUV with the convention's matrix."""
    sd = is_standard_definition(width, height)
    matrix = props.get("_Matrix", 2)
    if rgb or matrix not in _MATRIX:
        matrix = 6 if sd else 1
    primaries = props.get("_Primaries", 2)
    if primaries not in _PRIMARIES:
        primaries = (5 if height == 576 else 6) if sd else 1
    transfer = props.get("_Transfer", 2)
    if transfer not in _TRANSFER:
        transfer = 6 if sd else 1
    full = props["_Range"] == 1 if "_Range" in props else props.get("_ColorRange", 1) == 0
    return Signal(matrix, primaries, transfer, full and not rgb)
