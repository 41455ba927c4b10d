"""vs-coreml-esrgan upscale: the real vspipe | ffmpeg pipeline on real files."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import compact

from vs_coreml_esrgan.job.media import find_ffmpeg
from vs_coreml_esrgan.job.segments import segments


def _sigint_deliverable() -> None:
    """Ctrl-C reaches the job even when this test run inherited an ignored SIGINT (a
    shell's background job, CI): ignored signals are inherited across exec."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "sample.mp4"
CLI = str(Path(sys.executable).parent / "vs-coreml-esrgan")
FFMPEG = find_ffmpeg()


def _job(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, "upscale", *map(str, args)], capture_output=True, text=True,
                          timeout=600, **kwargs)


def _info(path: Path) -> str:
    return subprocess.run([FFMPEG, "-hide_banner", "-i", str(path)], capture_output=True,
                          text=True).stderr


def _frame_hashes(path: Path) -> list[str]:
    """Per-frame MD5s of the decoded video: an independent count and order check."""
    out = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-map", "0:v", "-f",
                          "framemd5", "-"], capture_output=True, text=True, check=True).stdout
    return [line.rsplit(",", 1)[1].strip() for line in out.splitlines()
            if line and not line.startswith("#")]


def _audio_seconds(path: Path, rate: int = 48000) -> float:
    raw = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-map", "0:a:0", "-f",
                          "s16le", "-ac", "1", "-ar", str(rate), "-"], capture_output=True,
                         check=True).stdout
    return len(raw) / 2 / rate


def _streams(path: Path) -> list[tuple[str, str]]:
    return re.findall(r"Stream #0:\d+\S*: (\w+): (\w+)", _info(path))


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A small x2 network, slow enough on a 320x180 sample to be interrupted."""
    import torch
    from conftest import random_network

    path = tmp_path_factory.mktemp("model") / "x2.pth"
    torch.save(random_network(compact(scale=2, num_conv=8, num_feat=48)).state_dict(), path)
    return path


def test_sample_upscaled_with_audio(model, tmp_path):
    out = tmp_path / "sample-x2.mp4"
    result = _job(SAMPLE, out, "--model", model)
    assert result.returncode == 0, result.stderr
    assert "48 frames" in result.stdout
    info = _info(out)
    assert "640x360" in info and "bt709" in info and "SAR 1:1" in info
    assert len(_frame_hashes(out)) == 48
    assert [kind for kind, _ in _streams(out)] == ["Video", "Audio"]
    assert dict(_streams(out))["Audio"] == dict(_streams(SAMPLE))["Audio"]  # copied
    assert abs(_audio_seconds(out) - _audio_seconds(SAMPLE)) <= 1 / 24
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sample-x2.mp4"]  # no leftovers


@pytest.fixture(scope="module")
def rich_source(tmp_path_factory) -> Path:
    """A generated clip with AAC audio, SubRip subtitles, chapters and BT.601 tags."""
    directory = tmp_path_factory.mktemp("rich")
    subtitles = directory / "subs.srt"
    subtitles.write_text("1\n00:00:00,000 --> 00:00:00,800\nHello\n\n"
                         "2\n00:00:00,900 --> 00:00:01,400\nWorld\n")
    chapters = directory / "chapters.txt"
    chapters.write_text(";FFMETADATA1\ntitle=Rich\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\n"
                        "END=700\ntitle=One\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=700\n"
                        "END=1500\ntitle=Two\n")
    source = directory / "rich.mkv"
    subprocess.run([FFMPEG, "-v", "error", "-f", "lavfi", "-i",
                    "testsrc2=size=96x64:rate=20:duration=1.5", "-f", "lavfi", "-i",
                    "sine=frequency=300:sample_rate=44100:duration=1.5", "-i", str(subtitles),
                    "-i", str(chapters), "-map", "0:v", "-map", "1:a", "-map", "2:s",
                    "-map_metadata", "3", "-map_chapters", "3", "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", "-colorspace", "smpte170m", "-c:a", "aac",
                    "-c:s", "srt", str(source)], check=True)
    return source


@pytest.mark.parametrize(("suffix", "subtitle"), [(".mkv", "subrip"), (".mp4", "mov_text")])
def test_audio_subtitles_chapters_kept(model, rich_source, tmp_path, suffix, subtitle):
    out = tmp_path / f"out{suffix}"
    result = _job(rich_source, out, "--model", model, "--encoder", "x265", "--bit-depth", "10")
    assert result.returncode == 0, result.stderr
    streams = _streams(out)
    assert streams[0] == ("Video", "hevc")
    assert ("Audio", "aac") in streams and ("Subtitle", subtitle) in streams
    info = _info(out)
    assert "192x128" in info and "yuv420p10le" in info
    assert "Chapters:" in info and "title           : Two" in info
    assert len(_frame_hashes(out)) == 30
    assert abs(_audio_seconds(out, 44100) - 1.5) <= 1 / 20


def test_streams_mp4_cannot_hold_are_dropped_with_a_warning(model, tmp_path):
    source = tmp_path / "pcm.mkv"
    subprocess.run([FFMPEG, "-v", "error", "-f", "lavfi", "-i",
                    "testsrc2=size=64x48:rate=10:duration=0.5", "-f", "lavfi", "-i",
                    "sine=duration=0.5", "-c:v", "libx264", "-c:a", "pcm_s16le", str(source)],
                   check=True)
    out = tmp_path / "out.mp4"
    result = _job(source, out, "--model", model)
    assert result.returncode == 0, result.stderr
    assert "warning: audio stream 1 (pcm_s16le) cannot go into .mp4; dropped" in result.stderr
    assert [kind for kind, _ in _streams(out)] == ["Video"]


def _wait_for(predicate, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None, "the job ended before it could be interrupted"
        assert time.monotonic() < deadline, "timed out waiting for the job"
        time.sleep(0.05)


def test_interrupted_job_leaves_no_output(model, tmp_path):
    out = tmp_path / "out.mp4"
    process = subprocess.Popen([CLI, "upscale", str(SAMPLE), str(out), "--model", str(model)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=_sigint_deliverable)
    _wait_for(lambda: (tmp_path / ".out.partial.mp4").exists(), process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "interrupted; nothing was written" in stderr
    assert list(tmp_path.iterdir()) == []


def test_chunked_job_resumes_in_order(model, tmp_path):
    straight = tmp_path / "straight.mkv"
    assert _job(SAMPLE, straight, "--model", model, "--encoder", "ffv1").returncode == 0
    out = tmp_path / "chunked.mkv"
    command = [CLI, "upscale", str(SAMPLE), str(out), "--model", str(model), "--encoder",
               "ffv1", "--chunks", "4"]
    parts = tmp_path / ".chunked.mkv.parts"
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=_sigint_deliverable)
    _wait_for(lambda: (parts / "00000.mkv").exists(), process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "rerun the same command to resume" in stderr
    assert not out.exists()
    done_before = len(list(parts.glob("0*.mkv")))
    assert 1 <= done_before < 4

    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert f"resumed: {done_before} of 4 segments were already done" in result.stderr
    processed = int(re.search(r"\((\d+) processed now", result.stdout).group(1))
    assert processed == 48 - done_before * 12  # fewer frames the second time
    assert not parts.exists()
    assert _frame_hashes(out) == _frame_hashes(straight)  # no frame lost, doubled, reordered
    assert abs(_audio_seconds(out) - _audio_seconds(SAMPLE)) <= 1 / 24


def test_segments_cover_the_range_exactly():
    for first, last, chunks in ((0, 47, 4), (5, 9, 7), (0, 0, 3), (10, 1000, 9)):
        ranges = segments(first, last, chunks)
        covered = [n for a, b in ranges for n in range(a, b + 1)]
        assert covered == list(range(first, last + 1))


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: d / "missing.mp4", "input {} does not exist"),
    (lambda d: (d / "notes.mp4").write_text("not a video") and d / "notes.mp4",
     "not a readable media file"),
])
def test_bad_inputs(model, tmp_path, make, message):
    source = make(tmp_path)
    out = tmp_path / "out.mp4"
    result = _job(source, out, "--model", model)
    assert result.returncode == 1
    assert message.format(source) in result.stderr
    assert not out.exists()


def test_existing_output_is_kept(model, tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"precious")
    result = _job(SAMPLE, out, "--model", model)
    assert result.returncode == 1 and "exists; pass --force" in result.stderr
    assert out.read_bytes() == b"precious"


def test_print_shows_script_and_pipeline(model, tmp_path):
    result = _job(SAMPLE, tmp_path / "o.mkv", "--model", model, "--tile", "96x64",
                  "--precision", "fp32", "--prefer", "efficiency", "--print")
    assert result.returncode == 0
    assert ("core.bs.VideoSource(" in result.stdout or "clip = source(" in result.stdout)
    assert "tile=[96, 64]" in result.stdout and "precision='fp32'" in result.stdout
    assert "prefer='efficiency'" in result.stdout
    assert re.search(r"vspipe -c y4m -s 0 -e 47 upscale.vpy - \\\n  \| \S*ffmpeg", result.stdout)
    assert not (tmp_path / "o.mkv").exists()


def test_unreadable_model_reported_before_the_pipeline(tmp_path):
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"junk")
    result = _job(SAMPLE, tmp_path / "o.mp4", "--model", broken)
    assert result.returncode == 1
    assert "the model cannot run" in result.stderr and "not a readable PyTorch checkpoint" \
        in result.stderr
    assert "vspipe" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.pth"]


def test_frame_range_cuts_video_and_audio(model, tmp_path):
    whole = tmp_path / "whole.mkv"
    part = tmp_path / "part.mkv"
    assert _job(SAMPLE, whole, "--model", model, "--encoder", "ffv1").returncode == 0
    result = _job(SAMPLE, part, "--model", model, "--encoder", "ffv1", "--start", "12",
                  "--end", "35")
    assert result.returncode == 0, result.stderr
    assert _frame_hashes(part) == _frame_hashes(whole)[12:36]
    assert abs(_audio_seconds(part) - 24 / 24) <= 1 / 24 + 0.03  # AAC frames are ~21 ms
