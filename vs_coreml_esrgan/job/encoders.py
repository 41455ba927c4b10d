"""The encoders a job can write with, as data: what each takes from the y4m pipe (chroma
layouts, bit depths), how its quality and speed are set, which containers hold it, and
where it runs. The plan checks a request against this table, the script picks its pixel
format from it, and ``--print`` describes it.

Sources for the hardware rows: FFmpeg's ``libavcodec/videotoolboxenc.c`` (pixel formats:
H.264 nv12/yuv420p; HEVC adds p010le and p210; ProRes adds p210; ``-q:v`` sets
``kVTCompressionPropertyKey_Quality`` to q/100 and fails with "qscale not available for
encoder" where VideoToolbox lacks constant quality, i.e. off Apple Silicon; profiles
main/main10), ``nvenc.c``/``nvenc_hevc.c`` (``-cq`` 0-51 with ``-rc vbr``; presets p1-p7),
``qsvenc_hevc.c`` (``-global_quality``; presets veryfast-veryslow) and
``vaapi_encode.c`` (frames uploaded with ``hwupload``; ``-rc_mode CQP -qp``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# x264's and x265's named presets (x264 ``common/base.c``, x265 ``x265.cpp`` --preset).
X26X_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                "slower", "veryslow", "placebo")
NVENC_PRESETS = tuple(f"p{n}" for n in range(1, 8))
QSV_PRESETS = ("veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
_MOVIE = (".mkv", ".mp4", ".mov", ".m4v")


@dataclass(frozen=True)
class Quality:
    """How an encoder is set by quality: the options before the value, the range it takes,
    its default, and which way is better."""

    options: tuple[str, ...]
    low: int
    high: int
    default: int
    higher_is_better: bool = False

    @property
    def crf_like(self) -> bool:
        """Lower is better, as x264's CRF: ``--crf`` may name it."""
        return not self.higher_is_better

    def text(self) -> str:
        better = "higher" if self.higher_is_better else "lower"
        return (f"{' '.join(self.options)} {self.low}-{self.high}, {better} is better, "
                f"default {self.default}")


@dataclass(frozen=True)
class Encoder:
    """One ``--encoder`` choice. ``layouts``: the chroma layouts it takes ("420", "422",
    "444", "gray"); ``depths``: bit depths; ``pix_fmts``: the pixel format ffmpeg must
    hand it for a (layout, depth) when it does not take the pipe's planar one;
    ``presets``: the ``--preset`` values it takes (empty: none); ``hardware``: where it
    runs, None for software; ``upload``: the hwupload filter a VAAPI encoder needs."""

    name: str
    codec: str
    layouts: tuple[str, ...]
    depths: tuple[int, ...]
    quality: Quality | None
    presets: tuple[str, ...] = ()
    preset_hint: str = ""
    extra: tuple[str, ...] = ()
    containers: tuple[str, ...] = _MOVIE
    pix_fmts: dict[tuple[str, int], str] = field(default_factory=dict)
    profiles: dict[int, tuple[str, ...]] = field(default_factory=dict)
    hardware: str | None = None
    upload: bool = False
    hdr_metadata: bool = False  # takes HDR10 mastering/content-light values (see hdr.py)

    @property
    def hevc(self) -> bool:
        return "hevc" in self.codec or self.codec == "libx265"

    def codec_args(self, layout: str, bits: int, quality: int | None, preset: str | None,
                   container: str) -> list[str]:
        """ffmpeg's options for this encoder (no HDR metadata, no stream tags)."""
        args = ["-c:v", self.codec, *self.extra]
        if (layout, bits) in self.pix_fmts and not self.upload:
            args += ["-pix_fmt", self.pix_fmts[layout, bits]]
        args += list(self.profiles.get(bits, ()))
        if self.quality is not None:
            value = self.quality.default if quality is None else quality
            args += [*self.quality.options, str(value)]
        if preset:
            args += ["-preset", preset]
        if self.hevc and container in (".mp4", ".mov", ".m4v"):
            args += ["-tag:v", "hvc1"]  # Apple's players refuse HEVC tagged hev1
        return args

    def upload_filter(self, layout: str, bits: int) -> str:
        """The filters that hand frames to a hardware encoder's device ("" for others)."""
        if not self.upload:
            return ""
        return f",format={self.pix_fmts.get((layout, bits), 'nv12')},hwupload"

    def describe(self) -> str:
        """One line for ``--print`` and the help: where it runs and how it is set."""
        where = self.hardware or "software (CPU)"
        quality = self.quality.text() if self.quality else "no quality setting"
        presets = self.preset_hint or (f"--preset {'/'.join(self.presets)}"
                                       if self.presets else "no --preset")
        return f"{self.name}: {self.codec}, {where}; {quality}; {presets}"


_P010 = {("420", 10): "p010le"}
ENCODERS: dict[str, Encoder] = {e.name: e for e in (
    Encoder("x264", "libx264", ("420", "422", "444", "gray"), (8, 10),
            Quality(("-crf",), 0, 51, 16), X26X_PRESETS),
    Encoder("x265", "libx265", ("420", "422", "444", "gray"), (8, 10, 12),
            Quality(("-crf",), 0, 51, 18), X26X_PRESETS, hdr_metadata=True),
    # SVT-AV1's presets are numbers (libsvtav1.c: -1 to 13, lower is slower)
    Encoder("av1", "libsvtav1", ("420",), (8, 10), Quality(("-crf",), 0, 63, 28),
            tuple(str(n) for n in range(-1, 14)), "--preset -1 to 13 (lower is slower)",
            containers=(*_MOVIE, ".webm"), hdr_metadata=True),
    Encoder("vp9", "libvpx-vp9", ("420", "422", "444"), (8, 10, 12),
            Quality(("-b:v", "0", "-crf"), 0, 63, 30),
            containers=(".mkv", ".mp4", ".webm")),
    Encoder("prores", "prores_ks", ("422", "444"), (10,), None, extra=("-profile:v", "3"),
            containers=(".mkv", ".mov")),
    Encoder("ffv1", "ffv1", ("420", "422", "444", "gray"), (8, 10, 12, 16), None,
            extra=("-level", "3", "-g", "1"), containers=(".mkv",)),
    # Apple's media engine (macOS). -q:v needs Apple Silicon; its default here is a
    # starting point, not a measured match for x264's CRF 16.
    Encoder("hevc_videotoolbox", "hevc_videotoolbox", ("420",), (8, 10),
            Quality(("-q:v",), 1, 100, 65, higher_is_better=True), pix_fmts=_P010,
            profiles={8: ("-profile:v", "main"), 10: ("-profile:v", "main10")},
            hardware="VideoToolbox (macOS media engine)"),
    Encoder("h264_videotoolbox", "h264_videotoolbox", ("420",), (8,),
            Quality(("-q:v",), 1, 100, 65, higher_is_better=True),
            profiles={8: ("-profile:v", "high")},
            hardware="VideoToolbox (macOS media engine)"),
    Encoder("prores_videotoolbox", "prores_videotoolbox", ("422",), (10,), None,
            extra=("-profile:v", "hq"), containers=(".mkv", ".mov"),
            pix_fmts={("422", 10): "p210le"}, hardware="VideoToolbox (macOS media engine)"),
    Encoder("hevc_nvenc", "hevc_nvenc", ("420",), (8, 10),
            Quality(("-rc", "vbr", "-b:v", "0", "-cq"), 1, 51, 20), NVENC_PRESETS,
            pix_fmts=_P010, profiles={10: ("-profile:v", "main10")},
            hardware="NVENC (NVIDIA GPU)"),
    Encoder("h264_nvenc", "h264_nvenc", ("420",), (8,),
            Quality(("-rc", "vbr", "-b:v", "0", "-cq"), 1, 51, 19), NVENC_PRESETS,
            hardware="NVENC (NVIDIA GPU)"),
    Encoder("av1_nvenc", "av1_nvenc", ("420",), (8, 10),
            Quality(("-rc", "vbr", "-b:v", "0", "-cq"), 1, 63, 30), NVENC_PRESETS,
            containers=(*_MOVIE, ".webm"), pix_fmts=_P010, hardware="NVENC (NVIDIA GPU)"),
    Encoder("hevc_qsv", "hevc_qsv", ("420",), (8, 10), Quality(("-global_quality",), 1, 51, 22),
            QSV_PRESETS, pix_fmts={("420", 8): "nv12", **_P010},
            profiles={10: ("-profile:v", "main10")}, hardware="Quick Sync (Intel GPU)"),
    Encoder("hevc_vaapi", "hevc_vaapi", ("420",), (8, 10),
            Quality(("-rc_mode", "CQP", "-qp"), 1, 51, 22),
            extra=("-vaapi_device", "/dev/dri/renderD128"),
            pix_fmts={("420", 8): "nv12", **_P010}, profiles={10: ("-profile:v", "main10")},
            hardware="VAAPI (Linux GPU at /dev/dri/renderD128)", upload=True),
)}


def default_encoder(suffix: str) -> str:
    """The encoder a job uses without ``--encoder``: x264 (VP9 for .webm). Also on a Mac:
    VideoToolbox's quality at matched bitrate against x264 was not measured here."""
    return "vp9" if suffix.lower() == ".webm" else "x264"


def hdr_capable() -> list[str]:
    """Encoders that write HDR as players expect it: HEVC, AV1 or VP9 at 10 bits or more
    (10-bit H.264 and ProRes exist, but not as HDR delivery formats)."""
    return [e.name for e in ENCODERS.values()
            if max(e.depths) >= 10 and e.quality and "264" not in e.codec]
