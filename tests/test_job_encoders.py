"""Encoders: options checked against the encoder table before any work, hardware encoders
by ffmpeg's names (VideoToolbox through a double of a macOS ffmpeg that encodes with
libx265 underneath), each output decoded and compared with a lossless run of the same job."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from media_files import FFMPEG, VIDEO, ffmpeg, job, stream_facts, tiny_model

from vs_coreml_esrgan.job.encoder_check import check_options, ffmpeg_encoders
from vs_coreml_esrgan.job.encoders import ENCODERS
from vs_coreml_esrgan.job.media import JobError
from vs_coreml_esrgan.job.pipe import failure_report

FAKES = Path(__file__).resolve().parent / "fakes"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """1 s of odd-sized video with a stereo AAC track and tags, as a recording has."""
    path = tmp_path_factory.mktemp("source") / "in put.mkv"
    ffmpeg("-f", "lavfi", "-i", f"{VIDEO}:duration=1".replace("64x48", "66x50"), "-f",
           "lavfi", "-i", "sine=frequency=440:duration=1", "-ac", "2", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", "-c:a", "aac", "-metadata", "title=Holiday",
           "-metadata:s:a:0", "language=fra", "-metadata:s:v:0", "language=eng", path)
    return path


def _macos_ffmpeg(directory: Path, log: Path) -> dict[str, str]:
    """An environment whose PATH starts with the VideoToolbox double named ``ffmpeg``."""
    bin_dir = directory / "bin"
    bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / "ffmpeg"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" '
                       f'"{FAKES / "ffmpeg_videotoolbox.py"}" "$@"\n')
    wrapper.chmod(0o755)
    return dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                REAL_FFMPEG=FFMPEG, FAKE_FFMPEG_LOG=str(log))


def _frames(path: Path) -> np.ndarray:
    """Every decoded frame's luma as float (frames, height, width), in 8-bit units."""
    import av

    with av.open(str(path)) as container:
        planes = []
        for frame in container.decode(container.streams.video[0]):
            plane = frame.reformat(format="gray16le").to_ndarray().astype(np.float64)
            planes.append(plane / 257.0)
    return np.stack(planes)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return 10 * np.log10(255.0 ** 2 / mse) if mse else float("inf")


def _audio(path: Path) -> list[dict]:
    return [s for s in stream_facts(path) if s["type"] == "audio"]


# --- issue 23 item 16: options the encoder cannot take are refused before any work ---

@pytest.mark.parametrize(("args", "message"), [
    (("--encoder", "av1", "--preset", "slow"),
     "encoder av1 takes --preset -1 to 13 (lower is slower); got --preset slow"),
    (("--preset", "nonsense"), "encoder x264 takes --preset ultrafast, superfast"),
    (("--crf", "-5"), "--crf for x264 must be 0 to 51 (lower is better), got -5"),
    (("--chunks", "0"), "--chunks must be at least 1, got 0"),
    (("--encoder", "vp9", "--preset", "slow"), "encoder vp9 has no --preset"),
    (("--encoder", "x265", "--quality", "70"), "--quality for x265 must be 0 to 51"),
    (("--crf", "20", "--quality", "20"), "give --crf or --quality, not both"),
])
def test_encoder_options_refused_before_work(model, source, tmp_path, args, message):
    out = tmp_path / "out.mkv"
    result = job(source, out, "--model", model, *args)
    assert result.returncode == 1, result.stderr
    assert message in result.stderr
    assert "vspipe" not in result.stderr and "ffmpeg failed" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_every_preset_in_the_table_opens_its_encoder(tmp_path):
    """The table's preset lists are what the encoders take: each software encoder opens
    with its first, middle and last preset (and a refused value is refused by ffmpeg too,
    so the table is not stricter than the encoder without reason)."""
    import subprocess

    for encoder in (e for e in ENCODERS.values() if e.presets and not e.hardware):
        for preset in {encoder.presets[0], encoder.presets[len(encoder.presets) // 2],
                       encoder.presets[-1]} - {"placebo"}:
            args = encoder.codec_args("420", 8, None, preset, ".mkv")
            result = subprocess.run(
                [FFMPEG, "-v", "error", "-f", "lavfi", "-i", "color=size=64x64:rate=5",
                 "-frames:v", "2", *args, "-f", "null", "-"], capture_output=True, text=True)
            assert result.returncode == 0, (encoder.name, preset, result.stderr)
    refused = subprocess.run([FFMPEG, "-v", "error", "-f", "lavfi", "-i", "color=size=64x64",
                              "-frames:v", "1", "-c:v", "libsvtav1", "-preset", "slow", "-f",
                              "null", "-"], capture_output=True, text=True)
    assert refused.returncode != 0


def test_option_checks_follow_the_table():
    vt = ENCODERS["hevc_videotoolbox"]
    assert check_options(vt, ".mov", 10, None, 80, None) == 80
    assert check_options(vt, ".mp4", None, None, None, None) is None
    with pytest.raises(JobError, match="runs the other way from a CRF"):
        check_options(vt, ".mp4", None, 20, None, None)
    with pytest.raises(JobError, match="takes bit depth 8 or 10, not 12"):
        check_options(vt, ".mp4", 12, None, None, None)
    with pytest.raises(JobError, match=r"cannot write \.webm"):
        check_options(vt, ".webm", None, None, None, None)
    with pytest.raises(JobError, match="has no --preset"):
        check_options(vt, ".mp4", None, None, None, "fast")
    nvenc = ENCODERS["hevc_nvenc"]
    assert check_options(nvenc, ".mkv", None, 23, None, "p5") == 23
    assert nvenc.codec_args("420", 10, 23, "p5", ".mp4") == [
        "-c:v", "hevc_nvenc", "-pix_fmt", "p010le", "-profile:v", "main10", "-rc", "vbr",
        "-b:v", "0", "-cq", "23", "-preset", "p5", "-tag:v", "hvc1"]


# --- hardware encoders by their ffmpeg names ---

def test_encoder_missing_from_ffmpeg_is_refused_naming_it(model, source, tmp_path):
    if "hevc_videotoolbox" in ffmpeg_encoders(FFMPEG):
        pytest.skip("this ffmpeg has VideoToolbox (macOS)")
    result = job(source, tmp_path / "out.mp4", "--model", model, "--encoder",
                 "hevc_videotoolbox")
    assert result.returncode == 1
    assert "encoder hevc_videotoolbox (VideoToolbox (macOS media engine)) is not in the " \
           "ffmpeg at " in result.stderr
    assert "-encoders` does not list hevc_videotoolbox" in result.stderr
    assert "it has: x264" in result.stderr
    assert "vspipe" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_listed_hardware_encoder_without_its_device_is_refused_before_work(
        model, source, tmp_path):
    if "hevc_nvenc" not in ffmpeg_encoders(FFMPEG):
        pytest.skip("this ffmpeg has no NVENC")
    if Path("/dev/nvidia0").exists():
        pytest.skip("an NVIDIA device is present")
    result = job(source, tmp_path / "out.mkv", "--model", model, "--encoder", "hevc_nvenc")
    assert result.returncode == 1
    assert "encoder hevc_nvenc (NVENC (NVIDIA GPU)) is listed by" in result.stderr
    assert "cannot encode 132x100 here" in result.stderr
    assert "vspipe" not in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_videotoolbox_writes_hevc_with_audio_and_tags(model, source, tmp_path):
    log = tmp_path / "calls.jsonl"
    env = _macos_ffmpeg(tmp_path, log)
    out = tmp_path / "out.mp4"
    printed = job(source, out, "--model", model, "--encoder", "hevc_videotoolbox", "--print",
                  env=env)
    assert printed.returncode == 0, printed.stderr
    assert "-c:v hevc_videotoolbox -profile:v main -q:v 65 -tag:v hvc1" in printed.stdout
    assert "# encoder hevc_videotoolbox: hevc_videotoolbox, VideoToolbox" in printed.stdout
    assert not out.exists()

    result = job(source, out, "--model", model, "--encoder", "hevc_videotoolbox", env=env)
    assert result.returncode == 0, result.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    encodes = [c for c in calls if "-f" in c and "yuv4mpegpipe" in c]
    assert len(encodes) == 1 and "hevc_videotoolbox" in encodes[0]
    assert encodes[0][encodes[0].index("-q:v") + 1] == "65"

    video = stream_facts(out)[0]
    assert (video["codec"], video["pix_fmt"], video["width"]) == ("hevc", "yuv420p", 132)
    assert video["metadata"]["language"] == "eng"
    audio = _audio(out)
    assert len(audio) == 1 and audio[0]["codec"] == "aac"
    assert audio[0]["metadata"]["language"] == "fra"
    import av

    with av.open(str(out)) as container:
        assert container.metadata["title"] == "Holiday"
        assert container.streams.video[0].codec_context.codec_tag == "hvc1"
    # The same job, losslessly encoded: the HEVC frames are those frames, well kept.
    reference = tmp_path / "reference.mkv"
    assert job(source, reference, "--model", model, "--encoder", "ffv1").returncode == 0
    ours, lossless = _frames(out), _frames(reference)
    assert ours.shape == lossless.shape == (10, 100, 132)
    assert _psnr(ours, lossless) > 30


@pytest.mark.slow
def test_videotoolbox_ten_bits_is_main10_from_p010(model, source, tmp_path):
    env = _macos_ffmpeg(tmp_path, tmp_path / "calls.jsonl")
    out = tmp_path / "out.mov"
    printed = job(source, out, "--model", model, "--encoder", "hevc_videotoolbox",
                  "--bit-depth", "10", "--quality", "80", "--print", env=env)
    assert "-c:v hevc_videotoolbox -pix_fmt p010le -profile:v main10 -q:v 80" \
        in printed.stdout
    assert "format=vs.YUV420P10" in printed.stdout
    result = job(source, out, "--model", model, "--encoder", "hevc_videotoolbox",
                 "--bit-depth", "10", "--quality", "80", env=env)
    assert result.returncode == 0, result.stderr
    video = stream_facts(out)[0]
    assert (video["codec"], video["pix_fmt"]) == ("hevc", "yuv420p10le")
    assert len(_audio(out)) == 1


@pytest.mark.slow
def test_videotoolbox_keeps_hdr_colour_tags(model, tmp_path):
    source = tmp_path / "hdr.mkv"
    ffmpeg("-f", "lavfi", "-i", f"{VIDEO}:duration=0.3", "-vf", "setparams=color_trc="
           "smpte2084:color_primaries=bt2020:colorspace=bt2020nc", "-c:v", "libx265",
           "-pix_fmt", "yuv420p10le", "-x265-params", "log-level=error:max-cll=1000,400",
           source)
    env = _macos_ffmpeg(tmp_path, tmp_path / "calls.jsonl")
    out = tmp_path / "out.mp4"
    result = job(source, out, "--model", model, "--encoder", "hevc_videotoolbox", env=env)
    assert result.returncode == 0, result.stderr
    assert "does not carry the input's HDR10" in result.stderr  # the y4m pipe drops it
    video = stream_facts(out)[0]
    assert video["pix_fmt"] == "yuv420p10le"  # HDR: 10 bits without being asked
    assert (video["primaries"], video["transfer"], video["colorspace"]) == (9, 16, 9)
    refused = job(source, tmp_path / "8.mp4", "--model", model, "--encoder",
                  "hevc_videotoolbox", "--bit-depth", "8", env=env)
    assert refused.returncode == 1 and "8-bit output would band" in refused.stderr


def test_a_writer_that_only_lost_its_reader_is_not_reported_as_the_failure():
    names = ["vspipe", "ffmpeg"]
    assert failure_report(names, [-13, 234], ["", "x264 [error]: invalid preset"]) == \
        "ffmpeg failed (exit 234):\nx264 [error]: invalid preset"
    # vspipe's own failure, or a SIGPIPE with a message, is shown
    assert failure_report(names, [-13, 0], ["", ""]) == "vspipe failed (exit -13):\n"
    assert failure_report(names, [1, 234], ["Python exception: boom", "ffmpeg: no input"]) \
        == "vspipe failed (exit 1):\nPython exception: boom\nffmpeg failed (exit 234):\n" \
        "ffmpeg: no input"
    assert failure_report(names, [0, 0], ["", ""]) == ""


def test_hardware_rows_spell_options_as_this_ffmpeg_parses_them():
    """Where this ffmpeg has a hardware encoder but no device, it still parses the
    options (they are set before the device opens): the table's spellings of quality,
    preset, profile and pixel format are checked against the real encoder here (NVENC
    and QSV; VAAPI stops earlier, at its -vaapi_device, so its row is not checked)."""
    import subprocess

    have = ffmpeg_encoders(FFMPEG)
    checked = 0
    for encoder in (e for e in ENCODERS.values() if e.hardware and e.codec in have):
        layout, bits = "420" if "420" in encoder.layouts else encoder.layouts[0], \
            max(encoder.depths)
        preset = encoder.presets[-1] if encoder.presets else None
        quality = encoder.quality.default if encoder.quality else None
        filters = encoder.upload_filter(layout, bits).lstrip(",")
        result = subprocess.run(
            [FFMPEG, "-v", "error", "-f", "lavfi", "-i", "color=size=256x144:rate=5",
             "-frames:v", "1", *(["-vf", filters] if filters else []),
             *encoder.codec_args(layout, bits, quality, preset, ".mp4"), "-f", "null", "-"],
            capture_output=True, text=True)
        for complaint in ("Unable to parse option", "Unrecognized option", "Error setting "
                          "option", "Option not found", "Undefined constant"):
            assert complaint not in result.stderr, (encoder.name, result.stderr)
        checked += 1
    if not checked:
        pytest.skip("this ffmpeg lists none of the hardware encoders")
