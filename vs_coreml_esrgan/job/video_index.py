"""Where each frame of a file's video lies: one decoding pass with PyAV.

The index is what makes the built-in source frame exact: frame ``n`` is the ``n``-th frame
the decoder delivers, known by its presentation timestamp. Like bestsource, it decodes every
frame once (counting packets would count frames a decoder drops, e.g. in a stream cut in
the middle of a group of pictures).
"""

from __future__ import annotations

import bisect
import json
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

_VERSION = 2  # 2: the display orientation


class SourceError(Exception):
    """A file the built-in source cannot deliver frame by frame."""


@dataclass(frozen=True)
class VideoIndex:
    """The video stream ``stream`` of ``path``: frame ``n`` has timestamp ``pts[n]`` (in
    ``time_base`` units, presentation order); ``keyframes`` lists frame numbers a decoder
    can start from. ``fps`` is exact for constant-rate video and the stream's average rate
    otherwise (``constant_rate`` says which)."""

    path: str
    size: int
    mtime_ns: int
    stream: int
    width: int
    height: int
    pix_fmt: str
    time_base: tuple[int, int]
    fps: tuple[int, int]
    constant_rate: bool
    pts: list[int]
    keyframes: list[int]
    last_duration: int  # of the last frame, in time_base units
    interlaced_frames: int = 0  # frames the decoder marks interlaced
    bottom_field_first: bool = False  # the stream's field order, for those frames
    # The display matrix's linear part (a, b, c, d) as signs: a point (x, y) of the decoded
    # picture is shown at (a x + c y, b x + d y); (1, 0, 0, 1) upright.
    orientation: tuple[int, int, int, int] = (1, 0, 0, 1)
    # The pixel aspect players use, of the stored picture: the container's where it states
    # one (Matroska's display size, mov's pasp: a DVD remux's 16:9 over an MPEG-2 header's
    # 4:3), else the bitstream's (libavformat's av_guess_sample_aspect_ratio); (0, 1) none.
    sar: tuple[int, int] = (0, 1)
    # The first frame's primaries and transfer (H.273), as the stream and container tag
    # them: the one reading every source filter's job follows (bestsource also reads ICC
    # profiles, PyAV cannot).
    colour_tags: tuple[int, int] = (2, 2)

    @property
    def transposed(self) -> bool:
        """Whether the picture is shown turned a quarter (width and height swap)."""
        return self.orientation[0] == 0

    @property
    def num_frames(self) -> int:
        return len(self.pts)

    def seconds(self, n: int) -> Fraction:
        """Frame ``n``'s presentation time in seconds (``n == num_frames``: the end)."""
        tb = Fraction(*self.time_base)
        if n == len(self.pts):
            return (self.pts[-1] + self.last_duration) * tb
        return self.pts[n] * tb

    def duration(self, n: int) -> Fraction:
        """How long frame ``n`` is shown, in seconds."""
        if self.constant_rate:
            return 1 / Fraction(*self.fps)
        return self.seconds(n + 1) - self.seconds(n)

    def save(self, target: Path) -> None:
        target.write_text(json.dumps({"version": _VERSION, **asdict(self)}))

    @classmethod
    def load(cls, path: Path) -> VideoIndex:
        data = json.loads(path.read_text())
        if data.pop("version", None) != _VERSION:
            raise SourceError(f"{path}: an index from another version; delete it")
        data["time_base"] = tuple(data["time_base"])
        data["fps"] = tuple(data["fps"])
        data["orientation"] = tuple(data["orientation"])
        data["sar"] = tuple(data["sar"])
        data["colour_tags"] = tuple(data["colour_tags"])
        return cls(**data)

    def matches(self, path: Path) -> bool:
        """Whether the index still describes the file at ``path``."""
        stat = path.stat()
        return (str(path.resolve()) == self.path and stat.st_size == self.size
                and stat.st_mtime_ns == self.mtime_ns)


def video_stream(container):
    """The file's main video stream: the first that is not a cover picture."""
    import av

    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    raise SourceError(f"{container.name}: no video stream")


def open_media(path: Path):
    """``av.open`` with the failure as a SourceError naming the file."""
    import av

    if path.is_dir():
        raise SourceError(f"{path} is a directory, not a video file")
    try:
        if not _utf8(str(path)):
            return _open_unnamed(path)
        return av.open(str(path))
    except FileNotFoundError:
        raise SourceError(f"{path} does not exist") from None
    except (av.FFmpegError, OSError) as exc:
        raise SourceError(f"{path}: not a readable media file ({exc})") from None


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes of the name, kept as surrogates
        return False
    return True


def _open_unnamed(path: Path):
    """A file whose name is not UTF-8 (latin-1 from an old archive): PyAV passes names to
    ffmpeg as UTF-8, so the file is opened here and read through a file object (the
    container holds it; it is closed when the container goes)."""
    import av

    file = path.open("rb")
    try:
        return av.open(file)
    except BaseException:
        file.close()
        raise


def build_index(path: Path) -> VideoIndex:
    """Decode the whole video stream once and record every frame's timestamp.

    Raises SourceError when the file has no decodable video or the video changes size or
    pixel format midway (a clip has one format)."""
    import av

    path = path.resolve()
    stat = path.stat()
    with open_media(path) as container:
        stream = video_stream(container)
        stream.codec_context.thread_type = "AUTO"
        pts: list[int] = []
        keyframes: list[int] = []
        first = None
        latest = None  # the last timestamp taken
        interlaced = 0
        orientation = (1, 0, 0, 1)
        colour_tags = (2, 2)
        try:
            for frame in container.decode(stream):
                shape = (frame.width, frame.height, frame.format.name)
                if first is None:
                    first = shape
                    orientation = display_orientation(frame)
                    colour_tags = (tag_of(frame, stream.codec_context, "color_primaries"),
                                   tag_of(frame, stream.codec_context, "color_trc"))
                elif shape != first:
                    raise SourceError(
                        f"{path}: the video changes from {first[0]}x{first[1]} {first[2]} to "
                        f"{shape[0]}x{shape[1]} {shape[2]} at frame {len(pts)}; a clip "
                        "has one size and format (re-encode it to one first)")
                stamp = frame.pts
                if stamp is None or (latest is not None and stamp <= latest):
                    stamp = None  # untimed or out of order: the decoder's order decides
                else:
                    latest = stamp
                if frame.key_frame:
                    keyframes.append(len(pts))
                interlaced += bool(frame.interlaced_frame)
                pts.append(stamp if stamp is not None else -1)
        except av.FFmpegError as exc:
            if not pts:
                raise SourceError(f"{path}: the video cannot be decoded ({exc})") from None
        if first is None:
            raise SourceError(f"{path}: the video stream has no decodable frame")
        time_base = stream.time_base or Fraction(1, 1000)
        rates = [r for r in (stream.average_rate, stream.guessed_rate) if r] or [Fraction(25)]
        pts, timed = _fill_untimed(pts, rates[0], time_base)
        constant, fps = _frame_rate(pts, rates, time_base)
        last = _last_duration(pts, stream, fps, time_base)
        return VideoIndex(
            path=str(path), size=stat.st_size, mtime_ns=stat.st_mtime_ns, stream=stream.index,
            width=first[0], height=first[1], pix_fmt=first[2],
            time_base=(time_base.numerator, time_base.denominator),
            fps=(fps.numerator, fps.denominator), constant_rate=constant, pts=pts,
            keyframes=keyframes if timed else [0], last_duration=last,
            interlaced_frames=interlaced,
            # AVFieldOrder 3 (BB) and 5 (BT) put the bottom field first
            bottom_field_first=int(stream.codec_context.field_order) in (3, 5),
            orientation=orientation, sar=_shown_sar(stream), colour_tags=colour_tags)


def tag_of(frame, context, name: str, unspecified: int = 2) -> int:
    """A colour tag of a decoded frame: its own value, else the stream's (containers such
    as Matroska carry the tags beside the bitstream); 2 is H.273's "unspecified"."""
    value = int(getattr(frame, name))
    if value in (0, unspecified):
        value = int(getattr(context, name)) or value
    return value


def _shown_sar(stream) -> tuple[int, int]:
    sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    return (sar.numerator, sar.denominator) if sar and sar > 0 else (0, 1)


def display_orientation(frame) -> tuple[int, int, int, int]:
    """The signs of a decoded frame's display matrix (a, b, c, d): how players turn and
    flip the picture (a phone's portrait video is stored landscape with a quarter turn).
    libavutil/display.h: a point (p, q) is shown at (a p + c q, b p + d q), a, b, c, d in
    16.16 fixed point, matrix stored row by row as [a b u; c d v; x y w]. Turns other than
    quarters (rare; players differ) are ignored: upright."""
    import av
    import numpy as np

    data = frame.side_data.get(av.sidedata.sidedata.Type.DISPLAYMATRIX)
    if data is None or data.buffer_size < 36:
        return (1, 0, 0, 1)
    matrix = np.frombuffer(bytes(data), np.int32, 9).astype(np.float64) / 65536
    a, b, c, d = (matrix[0], matrix[1], matrix[3], matrix[4])
    signs = tuple(int(np.sign(round(v))) if abs(abs(v) - 1) < 0.01 or abs(v) < 0.01
                  else 9 for v in (a, b, c, d))
    quarter = (signs[1] == signs[2] == 0 and 0 not in (signs[0], signs[3])) or \
        (signs[0] == signs[3] == 0 and 0 not in (signs[1], signs[2]))
    return signs if quarter and 9 not in signs else (1, 0, 0, 1)


def _fill_untimed(pts: list[int], rate: Fraction, time_base: Fraction
                  ) -> tuple[list[int], bool]:
    """Timestamps for frames that had none (marked -1): spaced evenly between the timed
    frames around them, a nominal frame apart before the first and after the last; the
    result always increases. The bool says whether every frame had its own (only then
    can seeking find frames)."""
    step = max(1, round(1 / (rate * time_base)))
    known = [k for k, stamp in enumerate(pts) if stamp >= 0]
    if not known:
        return [k * step for k in range(len(pts))], not pts
    filled = list(pts)
    for k, stamp in enumerate(pts):
        if stamp >= 0:
            continue
        after = bisect.bisect(known, k)
        if after == 0:
            filled[k] = pts[known[0]] - step * (known[0] - k)
        elif after == len(known):
            filled[k] = pts[known[-1]] + step * (k - known[-1])
        else:
            a, b = known[after - 1], known[after]
            filled[k] = pts[a] + round((pts[b] - pts[a]) * (k - a) / (b - a))
    for k in range(1, len(filled)):
        filled[k] = max(filled[k], filled[k - 1] + 1)
    return filled, len(known) == len(pts)


def _frame_rate(pts: list[int], rates: list[Fraction], time_base: Fraction
                ) -> tuple[bool, Fraction]:
    """(constant rate?, fps). Constant when every frame sits within one timestamp tick
    (or 1 ms) of one of the stream's nominal rates: 23.976 fps in a 1 ms time base alternates 41
    and 42 ms and is still constant."""
    slack = max(time_base, Fraction(1, 1000))
    origin = pts[0]
    for candidate in rates:
        if all(abs((stamp - origin) * time_base - k / candidate) <= slack
               for k, stamp in enumerate(pts)):
            return True, candidate
    return False, rates[0]


def _last_duration(pts: list[int], stream, fps: Fraction, time_base: Fraction) -> int:
    if len(pts) > 1:
        return pts[-1] - pts[-2]
    return max(1, round(1 / (fps * time_base)))
