"""The built-in source: a file's video as a VapourSynth clip, decoded with PyAV.

No source plugin needed (PyPI has no macOS wheels of bestsource, ffms2 or lsmas; PyAV has
wheels everywhere and carries the ffmpeg libraries). Frames come out exactly as a decoder
delivers them, numbered by an index (:mod:`.video_index`); in-order requests decode
straight through, others seek to the nearest keyframe before and decode forward.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from fractions import Fraction
from pathlib import Path

import numpy as np

from .video_index import (
    SourceError,
    VideoIndex,
    build_index,
    open_media,
    tag_of,
    video_stream,
)

# PyAV pixel format -> (VapourSynth format name, planes taken). Full-range "j" formats and
# alpha formats (whose alpha plane is left out) map to their planar equivalents.
_PLANAR = {"yuv420p": "YUV420P8", "yuv422p": "YUV422P8", "yuv444p": "YUV444P8",
           "yuv410p": "YUV410P8", "yuv411p": "YUV411P8", "yuv440p": "YUV440P8",
           "yuvj420p": "YUV420P8", "yuvj422p": "YUV422P8", "yuvj444p": "YUV444P8",
           "yuvj440p": "YUV440P8", "yuvj411p": "YUV411P8", "gray": "GRAY8", "gbrp": "RGB24",
           "yuva420p": "YUV420P8", "yuva422p": "YUV422P8", "yuva444p": "YUV444P8",
           "gbrap": "RGB24"}
for _bits in (9, 10, 12, 14, 16):
    for _sub in ("420", "422", "444"):
        _PLANAR[f"yuv{_sub}p{_bits}le"] = f"YUV{_sub}P{_bits}"
        _PLANAR[f"yuva{_sub}p{_bits}le"] = f"YUV{_sub}P{_bits}"
    _PLANAR[f"gray{_bits}le"] = f"GRAY{_bits}"
    _PLANAR[f"gbrp{_bits}le"] = f"RGB{3 * _bits}"
    _PLANAR[f"gbrap{_bits}le"] = f"RGB{3 * _bits}"
_PLANAR["yuv440p10le"] = "YUV440P10"
_PLANAR["yuv440p12le"] = "YUV440P12"

# VapourSynth keeps RGB planes in R, G, B order; ffmpeg's planar RGB is G, B, R.
_GBR = (2, 0, 1)
_CACHE_BYTES = 256 << 20  # decoded frames kept for requests that arrive out of order


def delivered_format(pix_fmt: str) -> tuple[str, str]:
    """(PyAV format to decode into, VapourSynth format name) for a stream's pixel format.

    Planar YUV, GRAY and RGB pass as they are; packed, semi-planar and palette formats are
    converted losslessly to the planar layout of the same family and depth (e.g. nv12 ->
    yuv420p, rgb24 / pal8 -> gbrp, p010 -> yuv420p10)."""
    if pix_fmt in _PLANAR:
        return pix_fmt, _PLANAR[pix_fmt]
    import av

    fmt = av.VideoFormat(pix_fmt)
    bits = max(c.bits for c in fmt.components)
    depth = 8 if bits <= 8 else 10 if bits <= 10 else 12 if bits <= 12 else 16
    suffix = "" if depth == 8 else f"{depth}le"
    if fmt.is_rgb or fmt.has_palette:
        target = f"gbrp{suffix}"
    elif len([c for c in fmt.components if not c.is_alpha]) == 1:
        target = f"gray{suffix}"
    else:
        sub_w, sub_h = 64 // fmt.chroma_width(64), 64 // fmt.chroma_height(64)
        layout = {(2, 2): "420", (2, 1): "422", (1, 1): "444"}.get((sub_w, sub_h), "444")
        target = f"yuv{layout}p{suffix}"
    if target not in _PLANAR:
        raise SourceError(f"pixel format {pix_fmt} is not supported by the built-in source")
    return target, _PLANAR[target]


def frame_props(frame, context, index: VideoIndex, n: int, sar: Fraction | None
                ) -> dict[str, object]:
    """The properties a source filter sets, from the decoded frame (H.273 code points)."""
    props: dict[str, object] = {}
    rgb = _PLANAR.get(frame.format.name, "").startswith("RGB") or frame.format.is_rgb \
        or frame.format.has_palette
    def tag(name: str, unspecified: int = 2) -> int:
        return tag_of(frame, context, name, unspecified)

    props["_Matrix"] = 0 if rgb else tag("colorspace")
    props["_Primaries"] = tag("color_primaries")
    props["_Transfer"] = tag("color_trc")
    av_range = tag("color_range", unspecified=0)  # 0 unknown, 1 limited, 2 full
    if frame.format.name.startswith("yuvj") or av_range == 2 or rgb:
        props["_Range"] = 1
    elif av_range == 1:
        props["_Range"] = 0
    location = int(frame.chroma_location) or int(context.chroma_sample_location)
    if location > 0:
        props["_ChromaLocation"] = location - 1
    if frame.interlaced_frame:
        # AVFieldOrder 3 (BB) and 5 (BT) put the bottom field first
        props["_FieldBased"] = 1 if int(context.field_order) in (3, 5) else 2
    else:
        props["_FieldBased"] = 0
    if sar and sar > 0:
        props["_SARNum"], props["_SARDen"] = sar.numerator, sar.denominator
    duration = index.duration(n)
    props["_DurationNum"], props["_DurationDen"] = duration.numerator, duration.denominator
    props["_AbsoluteTime"] = float(index.seconds(n))
    return props


class _Decoder:
    """Frames of one file by number, for one clip; safe to call from VapourSynth's threads."""

    def __init__(self, index: VideoIndex) -> None:
        self.index = index
        self.decode_as, _ = delivered_format(index.pix_fmt)
        self.lock = threading.Lock()
        self.number = {stamp: n for n, stamp in enumerate(index.pts)}
        self.cache: OrderedDict[int, tuple[list[np.ndarray], dict]] = OrderedDict()
        self.cached_bytes = 0
        self.container = None
        self.frames = None
        self.position = 0  # number of the frame the decoder delivers next

    def get(self, n: int) -> tuple[list[np.ndarray], dict]:
        with self.lock:
            if n in self.cache:
                self.cache.move_to_end(n)
                return self.cache[n]
            if self.frames is None or not self.position <= n < self.position + 64:
                self._seek(n)
            while True:
                if self.position > n:  # the seek landed after n: decode from the start
                    self._open(0)
                n_got, planes = self._next()
                if n_got == n:
                    return planes

    def _open(self, start_frame: int) -> None:
        """Position the decoder before ``start_frame``: a keyframe's timestamp, or the
        file's start (reopened, which is exact for any file)."""
        if start_frame == 0 and self.container is not None:
            self.container.close()
            self.container = None
        if self.container is None:
            self.container = open_media(Path(self.index.path))
        stream = self.container.streams[self.index.stream]
        stream.codec_context.thread_type = "AUTO"
        self.context = stream.codec_context
        self.sar = Fraction(*self.index.sar)
        if start_frame == 0:
            self.position = 0
        else:
            self.container.seek(self.index.pts[start_frame], stream=stream, backward=True)
            self.position = -1  # known from the first frame's timestamp
        self.frames = self.container.decode(stream)

    def _seek(self, n: int) -> None:
        keyframe = max((k for k in self.index.keyframes if k <= n), default=0)
        if keyframe == 0 or len(self.index.keyframes) <= 1:
            self._open(0)
        else:
            self._open(keyframe)

    def _next(self) -> tuple[int, tuple[list[np.ndarray], dict]]:
        try:
            frame = next(self.frames)
        except StopIteration:
            raise SourceError(f"{self.index.path}: the file ended at frame {self.position}; "
                              "it changed since it was indexed") from None
        if self.position < 0:  # just after a seek: find where we are by the timestamp
            if frame.pts not in self.number:
                self._open(0)
                return -1, ([], {})
            self.position = self.number[frame.pts]
        n = self.position
        self.position += 1
        planes = _planes(frame if frame.format.name == self.decode_as
                         else frame.reformat(format=self.decode_as))
        props = frame_props(frame, self.context, self.index, n, self.sar)
        self._remember(n, (planes, props))
        return n, (planes, props)

    def _remember(self, n: int, item: tuple[list[np.ndarray], dict]) -> None:
        self.cache[n] = item
        self.cached_bytes += sum(p.nbytes for p in item[0])
        while self.cached_bytes > _CACHE_BYTES and len(self.cache) > 1:
            _, (old, _) = self.cache.popitem(last=False)
            self.cached_bytes -= sum(p.nbytes for p in old)


def _planes(frame) -> list[np.ndarray]:
    """Copies of the frame's colour planes, in VapourSynth's plane order."""
    deep = any(c.bits > 8 for c in frame.format.components)
    dtype = np.uint16 if deep else np.uint8
    colour = [c for c in frame.format.components if not c.is_alpha]
    count = len({c.plane for c in colour})
    planes = []
    for plane in frame.planes[:count]:
        row = plane.line_size // dtype().itemsize
        data = np.frombuffer(plane, dtype).reshape(plane.height, row)
        planes.append(np.array(data[:, :plane.width]))
    if frame.format.name.startswith("gbr"):
        planes = [planes[i] for i in _GBR]
    return planes


def source(path: str | os.PathLike[str], *, index: str | os.PathLike[str] | None = None):
    """Open ``path``'s video as a VapourSynth clip, decoding with PyAV (no plugin needed).

    Frames are numbered as the decoder delivers them (like bestsource); each carries
    ``_Matrix``, ``_Primaries``, ``_Transfer``, ``_Range``, ``_ChromaLocation``,
    ``_FieldBased``, ``_SARNum``/``_SARDen``, ``_DurationNum``/``_DurationDen`` and
    ``_AbsoluteTime`` (seconds). 8-16 bit planar YUV, GRAY and RGB come as they are; other
    layouts are converted losslessly to the planar one; an alpha plane is left out.
    The picture is the one players show: a display matrix (a phone's portrait video) is
    applied, turning and flipping the pixels (``_SARNum``/``_SARDen`` turn with them); a
    turned or odd-sized subsampled picture (213x120 4:2:0) comes as 4:4:4 of the same
    depth, its chroma upsampled following ``_ChromaLocation`` (VapourSynth cannot hold
    odd-sized 4:2:0; nothing is cropped).
    The clip's fps is exact for constant-rate video and the stream's average rate for
    variable-rate video (the frames' durations are exact either way).
    ``index``: a file written by ``VideoIndex.save`` for this file (skips the decoding pass
    that numbers the frames; rebuilt if the file changed). Raises vapoursynth.Error.
    """
    import vapoursynth as vs

    try:
        video_index = _load_or_build(Path(path), index)
        decoder = _Decoder(video_index)
    except (SourceError, OSError) as exc:
        raise vs.Error(f"source: {exc}") from None
    _, format_name = delivered_format(video_index.pix_fmt)
    fmt = vs.core.get_video_format(getattr(vs, format_name))
    width, height = video_index.width, video_index.height
    # VapourSynth holds no 4:2:0 frame of odd width (853x480 H.264 is common): the frame is
    # made whole with a copy of its last column / row, and the picture taken out below.
    padded = (width + (-width % (1 << fmt.subsampling_w)),
              height + (-height % (1 << fmt.subsampling_h)))
    fps = Fraction(*video_index.fps)
    blank = vs.core.std.BlankClip(width=padded[0], height=padded[1], format=fmt.id,
                                  length=video_index.num_frames, fpsnum=fps.numerator,
                                  fpsden=fps.denominator, keep=True)

    def deliver(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        try:
            planes, props = decoder.get(n)
        except SourceError as exc:
            raise vs.Error(f"source: {exc}") from None
        out = f.copy()
        for plane, data in enumerate(planes):
            target = np.asarray(out[plane])
            rows, columns = data.shape
            target[:rows, :columns] = data
            target[:rows, columns:] = data[:, -1:]
            target[rows:] = target[rows - 1:rows]
        out.props.update(props)
        if video_index.transposed and "_SARNum" in props:  # the pixel turns with the picture
            out.props["_SARNum"], out.props["_SARDen"] = props["_SARDen"], props["_SARNum"]
        return out

    clip = blank.std.ModifyFrame(blank, deliver)
    return _shown(clip, width, height, video_index.orientation)


def _shown(clip, width: int, height: int, orientation: tuple[int, int, int, int]):
    """The picture as players show it: ``width`` x ``height`` out of a padded frame, turned
    and flipped by the display matrix. Subsampled video that is padded or turned becomes
    4:4:4 first (resize, following ``_ChromaLocation``): its chroma cannot be cropped to an
    odd size, and turned it would be sited where no siting code can say."""
    import vapoursynth as vs

    fmt = clip.format
    subsampled = fmt.subsampling_w or fmt.subsampling_h
    if subsampled and ((width, height) != (clip.width, clip.height)
                       or orientation != (1, 0, 0, 1)):
        full = fmt.replace(subsampling_w=0, subsampling_h=0)
        clip = vs.core.resize.Bicubic(clip, width=width, height=height, src_width=width,
                                      src_height=height, format=full.id)
        clip = vs.core.std.RemoveFrameProps(clip, "_ChromaLocation")
    a, b, c, d = orientation
    if a == 0:  # (x, y) shown at (c y, b x): transposed, then flipped where negative
        clip = vs.core.std.Transpose(clip)
        flip_x, flip_y = c < 0, b < 0
    else:
        flip_x, flip_y = a < 0, d < 0
    if flip_x:
        clip = vs.core.std.FlipHorizontal(clip)
    if flip_y:
        clip = vs.core.std.FlipVertical(clip)
    return clip


def _load_or_build(path: Path, index: str | os.PathLike[str] | None) -> VideoIndex:
    if not path.exists():
        raise SourceError(f"{path} does not exist")
    if index is not None and Path(index).is_file():
        try:
            loaded = VideoIndex.load(Path(index))
        except (SourceError, ValueError, TypeError):  # another version's: rebuilt
            loaded = None
        if loaded is not None and loaded.matches(path):
            return loaded
    built = build_index(path)
    if index is not None:
        built.save(Path(index))
    return built


def probe_index(path: Path) -> VideoIndex:
    """The index of ``path`` (raises SourceError); for the job's plan."""
    with open_media(path) as container:
        video_stream(container)
    return build_index(path)
