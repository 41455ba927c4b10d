"""The timestamp relay: y4m in, the same frames out as NUT, each with its source time."""

from __future__ import annotations

import io
import subprocess
import sys
from fractions import Fraction

import av
import numpy as np
import pytest
from media_files import FFMPEG

from vs_coreml_esrgan.job.relay import RelayError, command, relay, stamps
from vs_coreml_esrgan.job.video_index import VideoIndex, _fill_untimed


def _index(pts: list[int], last_duration: int) -> VideoIndex:
    return VideoIndex(path="x", size=0, mtime_ns=0, stream=0, width=8, height=8,
                      pix_fmt="yuv420p", time_base=(1, 90000), fps=(30, 1),
                      constant_rate=False, pts=pts, keyframes=[0], last_duration=last_duration)


def test_stamps_start_at_zero():
    index = _index([900, 3900, 6900, 12900, 18900], 6000)
    assert stamps(index, 0, 4) == [0, 3000, 6000, 12000, 18000]
    assert stamps(index, 1, 3) == [0, 3000, 9000]
    with pytest.raises(RelayError, match="frames 0-5 are not in the index's 0-4"):
        stamps(index, 0, 5)


@pytest.mark.parametrize(("pts", "filled"), [
    ([0, -1, 10, 50], [0, 5, 10, 50]),  # between timed frames, not a nominal step on
    ([-1, -1, 100, 133], [34, 67, 100, 133]),
    ([0, 33, -1, -1], [0, 33, 66, 99]),
    ([0, -1, 1, 2], [0, 1, 2, 3]),  # no room between them: still increasing
    ([-1, -1, -1], [0, 33, 66])])
def test_untimed_frames_get_increasing_times(pts, filled):
    assert _fill_untimed(pts, Fraction(30), Fraction(1, 1000))[0] == filled


def _y4m(pix_fmt: str, frames: int) -> bytes:
    return subprocess.run(
        [FFMPEG, "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=48x32:rate=10",
         "-frames:v", str(frames), "-pix_fmt", pix_fmt, "-strict", "-1",
         "-f", "yuv4mpegpipe", "-"], capture_output=True, check=True).stdout


def _decoded(data: bytes, fmt: str) -> list[av.VideoFrame]:
    with av.open(io.BytesIO(data), format=fmt) as container:
        return list(container.decode(video=0))


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv444p10le", "gray"])
def test_frames_pass_unchanged_with_their_times(pix_fmt):
    y4m = _y4m(pix_fmt, 4)
    pts = [0, 33, 100, 167]
    out = io.BytesIO()
    assert relay(io.BytesIO(y4m), out, pts, Fraction(1, 1000), Fraction(24, 1)) == 4
    with av.open(io.BytesIO(out.getvalue()), format="nut") as container:
        assert container.streams.video[0].average_rate == 24  # as given, not a default
    frames = _decoded(out.getvalue(), "nut")
    assert [f.pts * f.time_base for f in frames] == [Fraction(p, 1000) for p in pts]
    assert frames[0].format.name == pix_fmt
    for ours, theirs in zip(frames, _decoded(y4m, "yuv4mpegpipe"), strict=True):
        for a, b in zip(ours.planes, theirs.planes, strict=True):
            assert np.array_equal(np.frombuffer(bytes(a), np.uint8),
                                  np.frombuffer(bytes(b), np.uint8))


def test_more_frames_than_timestamps_is_an_error():
    with pytest.raises(RelayError, match="more than the 2 frames"):
        relay(io.BytesIO(_y4m("yuv420p", 3)), io.BytesIO(), [0, 40], Fraction(1, 1000),
              Fraction(25))


def test_fewer_frames_are_counted():
    assert relay(io.BytesIO(_y4m("yuv420p", 2)), io.BytesIO(), [0, 40, 80],
                 Fraction(1, 1000), Fraction(25)) == 2


def test_a_stream_that_stops_early_fails_the_relay_process(tmp_path):
    index = tmp_path / "index.json"
    _index([0, 40, 80, 120], 40).save(index)
    result = subprocess.run([sys.executable, "-m", "vs_coreml_esrgan.job.relay", str(index),
                             "0", "3"], input=_y4m("yuv420p", 2), capture_output=True)
    assert result.returncode == 1
    assert b"relay: the video stopped after 2 of frames 0-3" in result.stderr
    assert len(_decoded(result.stdout, "nut")) == 2


def test_a_package_folder_in_the_working_directory_is_not_imported(tmp_path):
    """Users run the job from anywhere, also from beside another copy of this project."""
    shadow = tmp_path / "vs_coreml_esrgan"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise SystemExit('the wrong copy')\n")
    index = tmp_path / "index.json"
    _index([0, 40], 40).save(index)
    result = subprocess.run(command(index, 0, 1), input=_y4m("yuv420p", 2),
                            capture_output=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(_decoded(result.stdout, "nut")) == 2
