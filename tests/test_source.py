"""The built-in source (PyAV) against bestsource, and the properties it sets."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import vapoursynth as vs
from media_files import VIDEO, ffmpeg, video_times

import vs_coreml_esrgan
from vs_coreml_esrgan.job.source import delivered_format

needs_bs = pytest.mark.skipif(not hasattr(vs.core, "bs"),
                              reason="compares with bestsource (vapoursynth-bestsource)")


def _same_frame(a: vs.VideoFrame, b: vs.VideoFrame) -> bool:
    return all(np.array_equal(np.asarray(a[p]), np.asarray(b[p]))
               for p in range(a.format.num_planes))


@needs_bs
@pytest.mark.parametrize(("codec", "pix_fmt", "suffix", "expected"), [
    ("libx264", "yuv420p", ".mkv", "YUV420P8"),
    ("libx264", "yuv422p10le", ".mkv", "YUV422P10"),
    ("ffv1", "yuv444p12le", ".mkv", "YUV444P12"),
    ("ffv1", "gray16le", ".mkv", "GRAY16"),
    ("qtrle", "rgb24", ".mov", "RGB24"),
    ("png", "rgba", ".mov", "RGB24"),
    ("libx264", "yuvj420p", ".mp4", "YUV420P8"),
])
def test_frames_match_bestsource(tmp_path, codec, pix_fmt, suffix, expected):
    path = tmp_path / f"clip{suffix}"
    ffmpeg("-f", "lavfi", "-i", f"{VIDEO}:duration=1.2", "-c:v", codec, "-pix_fmt", pix_fmt,
           *(["-g", "5", "-bf", "2"] if codec == "libx264" else []), path)
    ours = vs_coreml_esrgan.source(path)
    theirs = vs.core.bs.VideoSource(str(path))
    assert ours.format.name.upper() == expected == theirs.format.name.upper()
    assert ours.num_frames == theirs.num_frames == 12
    # in order, then out of order (seeks backwards and across keyframes)
    for n in [*range(12), 11, 2, 7, 0, 9, 4]:
        assert _same_frame(ours.get_frame(n), theirs.get_frame(n)), n
    props = ours.get_frame(0).props
    if expected.startswith("RGB"):
        assert props["_Matrix"] == 0 and props["_Range"] == 1
    elif pix_fmt.startswith("yuvj"):
        assert props["_Range"] == 1


def test_tags_and_timestamps(tmp_path):
    path = tmp_path / "tagged.mkv"
    ffmpeg("-f", "lavfi", "-i", f"{VIDEO}:duration=0.5", "-vf",
           "setparams=colorspace=bt2020nc:color_primaries=bt2020:color_trc=smpte2084,"
           "setsar=32/27", "-c:v", "libx265", "-pix_fmt", "yuv420p10le", "-x265-params",
           "log-level=error", path)
    clip = vs_coreml_esrgan.source(path)
    props = clip.get_frame(3).props
    assert (props["_Matrix"], props["_Primaries"], props["_Transfer"]) == (9, 9, 16)
    assert (props["_SARNum"], props["_SARDen"]) == (32, 27)
    assert props["_Range"] == 0 and props["_FieldBased"] == 0
    assert Fraction(props["_DurationNum"], props["_DurationDen"]) == Fraction(1, 10)
    assert props["_AbsoluteTime"] == pytest.approx(0.3)
    assert (clip.fps_num, clip.fps_den) == (10, 1)


def test_variable_frame_rate_keeps_each_timestamp(tmp_path):
    path = tmp_path / "vfr.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=30:duration=1", "-vf",
           "select='lt(n\\,10)+not(mod(n\\,2))'", "-fps_mode", "vfr", "-c:v", "libx264", path)
    times = video_times(path)
    clip = vs_coreml_esrgan.source(path)
    assert clip.num_frames == len(times) == 20
    got = [clip.get_frame(n).props["_AbsoluteTime"] for n in range(clip.num_frames)]
    assert got == pytest.approx([float(t) for t in times], abs=1e-6)
    durations = {Fraction(clip.get_frame(n).props["_DurationNum"],
                          clip.get_frame(n).props["_DurationDen"]) for n in range(18)}
    assert len(durations) > 1  # 1/30 s, then 1/15 s


def test_interlaced_frames_say_so(tmp_path):
    path = tmp_path / "tff.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=0.2", "-vf",
           "setfield=tff", "-c:v", "mpeg2video", "-flags", "+ilme+ildct", "-field_order",
           "tt", path)
    assert vs_coreml_esrgan.source(path).get_frame(0).props["_FieldBased"] == 2


def test_no_video_is_a_clear_error(tmp_path):
    path = tmp_path / "audio.mka"
    ffmpeg("-f", "lavfi", "-i", "sine=duration=0.2", path)
    with pytest.raises(vs.Error, match=r"^source: .*no video stream"):
        vs_coreml_esrgan.source(path)
    with pytest.raises(vs.Error, match=r"^source: .*is a directory"):
        vs_coreml_esrgan.source(tmp_path)


@pytest.mark.parametrize(("pix_fmt", "decoded", "vs_name"), [
    ("nv12", "yuv420p", "YUV420P8"), ("p010le", "yuv420p10le", "YUV420P10"),
    ("rgb24", "gbrp", "RGB24"), ("pal8", "gbrp", "RGB24"), ("rgb48le", "gbrp16le", "RGB48"),
    ("yuva420p", "yuva420p", "YUV420P8"), ("gray", "gray", "GRAY8")])
def test_layouts_map_to_planar_formats(pix_fmt, decoded, vs_name):
    assert delivered_format(pix_fmt) == (decoded, vs_name)
