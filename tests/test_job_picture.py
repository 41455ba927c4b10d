"""The picture a job upscales is the one players show: turned by the display matrix, the
whole of an odd-sized 4:2:0 frame. Checked with a Compact network whose body is zero, so
it is exactly a nearest-neighbour x2: the output, sampled every other pixel, must be the
picture ffmpeg shows (decoded with its autorotation), up to the colour round trip."""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compact, random_network
from media_files import FFMPEG, VIDEO, ffmpeg, job, stream_facts

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def nearest(tmp_path_factory) -> Path:
    """A real Compact x2 network whose convolutions are zero: it adds nothing to its own
    nearest-neighbour upsampling of the input."""
    network = random_network(compact(scale=2, num_conv=2, num_feat=8))
    with torch.no_grad():
        for name, parameter in network.named_parameters():
            if "body" in name:
                parameter.zero_()
    path = tmp_path_factory.mktemp("model") / "nearest-x2.pth"
    torch.save(network.state_dict(), path)
    return path


def shown_luma(path: Path) -> np.ndarray:
    """The first frame's luma as ffmpeg shows it (display matrix applied), 8 bit."""
    y4m = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-frames:v", "1",
                          "-f", "yuv4mpegpipe", "-pix_fmt", "yuv444p", "-"],
                         capture_output=True, check=True).stdout
    header, rest = y4m.split(b"\n", 1)
    fields = {f[:1]: f[1:] for f in header.split(b" ")}
    width, height = int(fields[b"W"]), int(fields[b"H"])
    pixels = np.frombuffer(rest.split(b"\n", 1)[1], np.uint8)  # after "FRAME"
    return pixels[:width * height].reshape(height, width).astype(int)


def output_luma(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frame = next(container.decode(stream))
        assert frame.rotation == 0  # the pixels are turned; no display matrix is left
        return frame.to_ndarray(format="yuv444p")[0].astype(int)


def assert_shows(out: Path, reference: np.ndarray) -> None:
    got = output_luma(out)
    assert got.shape == (2 * reference.shape[0], 2 * reference.shape[1])
    difference = np.abs(got[::2, ::2] - reference)
    # the colour round trip (YUV -> RGB clamped -> YUV) moves a few saturated pixels; a
    # picture turned the wrong way differs by tens of levels almost everywhere
    assert np.median(difference) <= 1 and difference.mean() <= 2, \
        (np.median(difference), difference.mean())


@pytest.mark.parametrize(("turn", "source"), [
    (("-display_rotation", "90"), "builtin"),
    (("-display_rotation", "270"), "builtin"),
    (("-display_rotation", "0", "-display_hflip"), "builtin"),
    (("-display_rotation", "90", "-display_vflip"), "builtin"),
    (("-display_rotation", "90"), "auto"),
])
def test_display_matrix_is_applied(nearest, tmp_path, turn, source):
    """A phone's portrait video (a quarter turn in its display matrix) comes out upright:
    the built-in source left it landscape, shown sideways."""
    stored = tmp_path / "stored.mkv"
    ffmpeg("-f", "lavfi", "-i", f"{VIDEO}:duration=0.2", "-c:v", "libx264", "-pix_fmt",
           "yuv420p", stored)
    phone = tmp_path / "phone.mov"
    ffmpeg(*turn, "-i", stored, "-c", "copy", phone)
    reference = shown_luma(phone)
    assert not np.array_equal(reference, shown_luma(stored)[:reference.shape[0]])
    out = tmp_path / "out.mkv"
    result = job(phone, out, "--model", nearest, "--encoder", "ffv1", "--source", source)
    assert result.returncode == 0, result.stderr
    assert_shows(out, reference)
    assert stream_facts(out)[0]["pix_fmt"] == "yuv420p"  # the stream's own layout


@pytest.mark.parametrize("source", ["builtin", "auto"])
def test_odd_sized_420_is_upscaled_whole(nearest, tmp_path, source):
    """213x121 4:2:0 (853x480 files are common): bestsource cropped the last column and
    row, the built-in source refused ("BlankClip: invalid width")."""
    odd = tmp_path / "odd.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=213x121:rate=10:duration=0.2", "-vf",
           "scale=213:121,format=yuv420p", "-c:v", "ffv1", odd)
    assert stream_facts(odd)[0]["width"] == 213
    out = tmp_path / "out.mkv"
    result = job(odd, out, "--model", nearest, "--encoder", "ffv1", "--source", source)
    assert result.returncode == 0, result.stderr
    assert_shows(out, shown_luma(odd))
    assert stream_facts(out)[0]["pix_fmt"] == "yuv420p"


@pytest.mark.parametrize("source", ["builtin", "auto"])
def test_the_containers_aspect_ratio_wins(nearest, tmp_path, source):
    """A DVD remux: the MPEG-2 header says 4:3 (square pixels here), Matroska's display
    size 16:9, as mkvmerge --aspect-ratio writes; players show 16:9. bestsource took the
    header's and the output was squashed."""
    stream = tmp_path / "dvd.m2v"
    ffmpeg("-f", "lavfi", "-i", f"{VIDEO}:duration=0.3", "-c:v", "mpeg2video", "-aspect",
           "4:3", "-pix_fmt", "yuv420p", stream)
    remux = tmp_path / "dvd.mkv"
    ffmpeg("-fflags", "+genpts", "-r", "10", "-i", stream, "-c", "copy", "-aspect", "16:9",
           remux)
    assert stream_facts(remux)[0]["sar"] == Fraction(4, 3)
    out = tmp_path / "out.mkv"
    result = job(remux, out, "--model", nearest, "--encoder", "ffv1", "--source", source)
    assert result.returncode == 0, result.stderr
    facts = stream_facts(out)[0]
    assert facts["sar"] == Fraction(4, 3) and facts["width"] == 128


def test_an_odd_upscaled_size_is_written_as_444(tmp_path):
    """An x3 model on 213x121 gives 639x363, which 4:2:0 cannot hold: 4:4:4 with a
    warning where the encoder takes it, a clear refusal where it does not."""
    network = random_network(compact(scale=3, num_conv=2, num_feat=8))
    with torch.no_grad():
        for name, parameter in network.named_parameters():
            if "body" in name:
                parameter.zero_()
    model = tmp_path / "nearest-x3.pth"
    torch.save(network.state_dict(), model)
    odd = tmp_path / "odd.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=213x121:rate=10:duration=0.2", "-vf",
           "scale=213:121,format=yuv420p", "-c:v", "ffv1", odd)
    out = tmp_path / "out.mkv"
    result = job(odd, out, "--model", model, "--encoder", "ffv1")
    assert result.returncode == 0, result.stderr
    assert "639x363, which 4:2:0 cannot hold: written as 4:4:4" in result.stderr
    facts = stream_facts(out)[0]
    assert (facts["width"], facts["pix_fmt"]) == (639, "yuv444p")
    refused = job(odd, tmp_path / "av1.mkv", "--model", model, "--encoder", "av1")
    assert refused.returncode == 1
    assert "encoder av1 writes no 4:4:4" in refused.stderr


@pytest.mark.parametrize("source", ["builtin", "auto"])
def test_a_quarter_turn_turns_the_pixel_aspect(nearest, tmp_path, source):
    """Pixels twice as wide as tall, turned a quarter, are shown twice as tall as wide
    (bestsource turns the picture but reports the stored aspect)."""
    stored = tmp_path / "wide-pixels.mkv"
    ffmpeg("-f", "lavfi", "-i", f"{VIDEO}:duration=0.2", "-vf", "setsar=2/1", "-c:v",
           "libx264", "-pix_fmt", "yuv420p", stored)
    phone = tmp_path / "phone.mov"
    ffmpeg("-display_rotation", "90", "-i", stored, "-c", "copy", phone)
    printed = job(phone, tmp_path / "out.mkv", "--model", nearest, "--source", source,
                  "--print")
    assert printed.returncode == 0, printed.stderr
    assert "setsar=1/2," in printed.stdout
