"""The job under stop signals, resumption with other weights, and checks that must come
before vspipe and ffmpeg start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import compact, random_network
from media_files import CLI, VIDEO, children, ffmpeg, job

from vs_coreml_esrgan.job.pipe import _Progress
from vs_coreml_esrgan.job.segments import concat_line

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "sample.mp4"


@pytest.fixture(scope="module")
def long_source(tmp_path_factory) -> Path:
    """60 s of video with audio: a job stopped mid-job cannot have finished before the
    signal arrives, whatever the machine's load."""
    path = tmp_path_factory.mktemp("long") / "long.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x180:rate=24:duration=60", "-f", "lavfi",
           "-i", "sine=frequency=440:duration=60", "-c:v", "libx264", "-preset", "ultrafast",
           "-c:a", "aac", path)
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "x2.pth"
    torch.save(random_network(compact(scale=2, num_conv=8, num_feat=48)).state_dict(), path)
    return path


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _background_job() -> None:
    """A shell's background job: SIGINT ignored, inherited by everything it starts. SIGHUP
    at its default, as in a terminal: a test run under nohup would otherwise pass its
    ignored SIGHUP on, and the job keeps an ignored SIGHUP ignored (nohup's meaning)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def _wait_for(predicate, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None, "the job ended before it could be stopped"
        assert time.monotonic() < deadline, "timed out waiting for the job"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes in /proc")
@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGHUP])
def test_stop_signal_ends_both_processes_and_leaves_nothing(model, long_source, tmp_path,
                                                            number):
    out = tmp_path / "out.mp4"
    work = tmp_path / "tmp"
    work.mkdir()
    env = dict(os.environ, TMPDIR=str(work))
    process = subprocess.Popen([CLI, "upscale", str(long_source), str(out), "--model",
                                str(model)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env, preexec_fn=_background_job)
    _wait_for(lambda: (tmp_path / ".out.partial.mp4").exists(), process)
    started = children(process.pid)
    assert len(started) >= 2  # vspipe and ffmpeg
    process.send_signal(number)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + number
    assert f"stopped by {signal.Signals(number).name}; nothing was written" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"]
    assert list(work.iterdir()) == []  # the temporary directory is gone
    assert not any(_alive(pid) for pid in started)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes in /proc")
def test_killing_vspipe_leaves_no_vspipe_running(model, long_source, tmp_path):
    out = tmp_path / "out.mkv"
    process = subprocess.Popen([CLI, "upscale", str(long_source), str(out), "--model",
                                str(model)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (tmp_path / ".out.partial.mkv").exists(), process)
    vspipe = [pid for pid in children(process.pid)
              if b"vspipe" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]]
    assert len(vspipe) == 1
    descendants = children(vspipe[0])  # a wrapper's real vspipe would be here
    os.kill(vspipe[0], signal.SIGKILL)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1 and "vspipe failed" in stderr
    assert not any(_alive(pid) for pid in descendants)
    assert not out.exists()


@pytest.mark.slow
def test_resume_refuses_segments_made_with_other_weights(model, tmp_path):
    source = tmp_path / "in.mkv"
    ffmpeg("-f", "lavfi", "-i", f"{VIDEO}:duration=0.4", "-c:v", "libx264", source)
    weights = tmp_path / "model.pth"
    weights.write_bytes(model.read_bytes())
    out = tmp_path / "out.mkv"
    command = [CLI, "upscale", str(source), str(out), "--model", str(weights), "--chunks",
               "2", "--encoder", "ffv1"]
    parts = tmp_path / ".out.mkv.parts"
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=lambda: signal.signal(signal.SIGINT,
                                                                           signal.SIG_DFL))
    _wait_for(lambda: (parts / "00000.mkv").exists(), process)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    assert json.loads((parts / "job.json").read_text())["model_sha256"]
    other = random_network(compact(scale=2, num_conv=8, num_feat=48), seed=1)
    torch.save(other.state_dict(), weights)  # same path, other weights

    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1
    assert "made with other model weights" in result.stderr and "--force" in result.stderr
    assert (parts / "00000.mkv").exists() and not out.exists()
    result = subprocess.run([*command, "--force"], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    assert "resumed" not in result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (("--encoder", "prores", "--crf", "20"), "encoder prores is not set by quality"),
    (("--encoder", "ffv1", "--crf", "20"), "encoder ffv1 is not set by quality"),
    (("--overlap", "-1"), "--overlap must be 0 or more, got -1"),
    (("--backend", "coreml"), "--backend coreml needs macOS"),
    (("--backend", "mil", "--precision", "bf16"),
     "precision 'bf16' applies to backend 'torch' only"),
    (("--start", "5", "--end", "2"), "--end 2 is before --start 5"),
])
def test_bad_options_reported_before_work(model, tmp_path, args, message):
    if "coreml" in args and os.uname().sysname == "Darwin":
        pytest.skip("Core ML runs on macOS")
    out = tmp_path / ("out.mov" if "prores" in args else "out.mkv")
    result = job(SAMPLE, out, "--model", model, *args)
    assert result.returncode == 1
    assert message in result.stderr
    assert "vspipe" not in result.stderr and "ffmpeg failed" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_bad_paths_reported_before_work(model, tmp_path):
    result = job(tmp_path, tmp_path / "o.mkv", "--model", model)
    assert result.returncode == 1 and "is a directory; give a video file" in result.stderr
    copy = tmp_path / "in.mp4"
    copy.write_bytes(SAMPLE.read_bytes())
    result = job(copy, copy, "--model", model)
    assert result.returncode == 1 and "is the input file itself" in result.stderr
    result = job(copy, tmp_path / "missing" / "o.mkv", "--model", model)
    assert result.returncode == 1 and "directory" in result.stderr and \
        "does not exist; create it first" in result.stderr
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"junk")
    result = job(copy, tmp_path / "o.mkv", "--model", junk)
    assert result.returncode == 1 and "the model cannot run" in result.stderr
    assert "vspipe" not in result.stderr
    assert copy.read_bytes() == SAMPLE.read_bytes()


def test_errors_carry_no_progress_lines():
    progress = _Progress(None)
    progress._line(b"Script evaluation done in 1.52 seconds")
    progress._line(b"Information: VideoSource track #0 index progress 75%")
    progress._line(b"Frame: 3/48 (2.1 fps)Error: Failed to retrieve frame 4")
    progress._line(b"Output 3 frames in 1.43 seconds (2.10 fps)")
    assert progress.text.decode().strip() == "Error: Failed to retrieve frame 4"
    assert progress.done == 3


def test_concat_list_quotes_apostrophes(tmp_path):
    line = concat_line(tmp_path / "Kiki's Delivery Service.mkv")
    assert line == f"file '{tmp_path}/Kiki'\\''s Delivery Service.mkv'\n"


def _manifest(**changes) -> dict:
    wanted = {"source": "/videos/in.mkv", "source_size": 1000, "source_mtime_ns": 5,
              "script": "clip = ...", "video": ["-c:v", "ffv1"], "model_sha256": "ab",
              "segments": [[0, 4], [5, 9]]}
    return {**wanted, **changes}


@pytest.mark.parametrize(("recorded", "says", "options_hint"), [
    (_manifest(source_mtime_ns=4), "the file changed since (its size or modification "
                                   "time differs)", False),
    (_manifest(model_sha256="cd"), "made with other model weights", False),
    (_manifest(video=["-c:v", "libx264"]), "made with other options", True),
])
def test_a_refused_resume_names_its_reason(tmp_path, recorded, says, options_hint):
    """A source whose modification time changed was refused with "rerun with the same
    options" (they were the same)."""
    from vs_coreml_esrgan.job.media import JobError
    from vs_coreml_esrgan.job.segments import _check_resumable

    (tmp_path / "job.json").write_text(json.dumps(recorded))
    with pytest.raises(JobError) as refused:
        _check_resumable(tmp_path, _manifest(), force=False)
    message = str(refused.value)
    assert says in message and "--force" in message
    assert ("same options" in message or "options that made them" in message) \
        == options_hint


def test_segment_counts_read_as_english():
    from types import SimpleNamespace

    from vs_coreml_esrgan.job.batch import done

    item = SimpleNamespace(job=SimpleNamespace(frames=10), entry=None)
    assert done(item, 5, 1).detail == "10 frames (5 processed now, 1 segment reused)"
    assert done(item, 0, 2).detail == "10 frames (0 processed now, 2 segments reused)"


def test_print_says_the_warnings_a_run_says(tmp_path):
    source = tmp_path / "alpha.mov"
    ffmpeg("-f", "lavfi", "-i", f"{VIDEO}:duration=0.2", "-c:v", "png", "-pix_fmt", "rgba",
           source)
    result = job(source, tmp_path / "out.mkv", "--print")
    assert result.returncode == 0, result.stderr
    assert "warning: the input has an alpha channel (rgba)" in result.stderr
    assert "# pipeline" in result.stdout


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes in /proc")
def test_what_a_killed_run_left_is_removed_by_the_next(model, long_source, tmp_path):
    """SIGKILL (nothing can be cleaned then) left a hidden .NAME.partial.mkv and a
    temporary directory for good."""
    out = tmp_path / "out.mkv"
    work = tmp_path / "tmp"
    work.mkdir()
    env = dict(os.environ, TMPDIR=str(work))
    process = subprocess.Popen([CLI, "upscale", str(long_source), str(out), "--model",
                                str(model)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=env)
    partial = tmp_path / ".out.partial.mkv"
    _wait_for(partial.exists, process)
    started = children(process.pid)
    for pid in [process.pid, *started]:  # the run and the processes it started
        os.kill(pid, signal.SIGKILL)
    process.communicate(timeout=60)
    for pid in started:
        while _alive(pid):
            time.sleep(0.05)
    left = list(work.iterdir())
    assert partial.exists() and len(left) == 1 and left[0].is_dir()

    short = tmp_path / "short.mkv"
    ffmpeg("-f", "lavfi", "-i", f"{VIDEO}:duration=0.3", "-c:v", "libx264", short)
    result = job(short, tmp_path / "other.mkv", "--model", model, env=env)
    assert result.returncode == 0, result.stderr
    assert list(work.iterdir()) == []  # the orphan went with the next run's own
    result = job(short, out, "--model", model, env=env)
    assert result.returncode == 0, result.stderr
    assert not partial.exists() and out.exists()
