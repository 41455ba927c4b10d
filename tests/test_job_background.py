"""``--background`` and the thermal state: priorities read back from the running
processes (Linux /proc and ioprio_get), the macOS call checked against a double of the
system call, the thermal state through a double of PyObjC's Foundation."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest
from media_files import CLI, VIDEO, children, ffmpeg, tiny_model

from vs_coreml_esrgan.job import priority, thermal

THERMAL_FAKE = Path(__file__).resolve().parent / "fakes" / "thermal"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def long_source(tmp_path_factory) -> Path:
    """Long enough that the job is still running when its processes are read."""
    path = tmp_path_factory.mktemp("long") / "long.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x90:rate=24:duration=40", "-f", "lavfi",
           "-i", "sine=frequency=440:duration=40", "-c:v", "libx264", "-preset",
           "ultrafast", "-c:a", "aac", path)
    return path


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command name (field 3 onwards)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _command(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's /proc")
@pytest.mark.parametrize("background", [True, False])
def test_background_runs_vspipe_and_ffmpeg_at_low_priority(model, long_source, tmp_path,
                                                           background):
    out = tmp_path / "out.mkv"
    process = subprocess.Popen(
        [CLI, "upscale", str(long_source), str(out), "--model", str(model), "--encoder",
         "ffv1", *(["--background"] if background else [])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / ".out.partial.mkv").exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        started = {Path(_command(pid)).name.split("-")[0]: pid
                   for pid in children(process.pid)}
        assert {"vspipe", "ffmpeg"} <= set(started), started
        for name in ("vspipe", "ffmpeg"):
            nice = int(_stat(started[name])[16])  # field 19: nice
            io_class = priority.io_class(started[name])
            if background:
                assert (nice, io_class) == (10, 3), name  # 3: IOPRIO_CLASS_IDLE
            else:
                assert nice == os.getpriority(os.PRIO_PROCESS, 0) and io_class != 3, name
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert ("running at background priority (nice 10, idle I/O)" in stderr) == background


def test_background_on_macos_makes_taskpolicy_b_call(monkeypatch):
    """The call ``taskpolicy -b`` makes (system_cmds taskpolicy.c), through a double of
    os.setpriority: the values are xnu's sys/resource.h ones, whatever Python exposes."""
    calls = []
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(os, "setpriority", lambda *args: calls.append(args), raising=False)
    monkeypatch.delattr(os, "PRIO_DARWIN_PROCESS", raising=False)
    monkeypatch.delattr(os, "PRIO_DARWIN_BG", raising=False)
    text = priority.lower_priority()
    assert calls == [(4, 0, 0x1000)]  # PRIO_DARWIN_PROCESS, this process, PRIO_DARWIN_BG
    assert text.startswith("background priority (Darwin background")


# --- the thermal state ---

@pytest.fixture
def fake_foundation(monkeypatch):
    """PyObjC's Foundation replaced by the thermal double, states set per test."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("Foundation", THERMAL_FAKE / "Foundation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(sys.modules, "Foundation", module)

    def states(*values: int) -> None:
        monkeypatch.setenv("FAKE_THERMAL_STATES", ",".join(map(str, values)))
        module.NSProcessInfo._shared = None

    return states


def test_thermal_state_in_progress_line_and_time_per_state(fake_foundation):
    from tqdm import tqdm

    fake_foundation(0, 0, 2, 2, 3, 1)
    now = [100.0]
    log = thermal.HeatLog(thermal.thermal_reader(), clock=lambda: now[0])
    out = io.StringIO()
    bar = tqdm(total=10, file=out, disable=False, mininterval=0, desc="upscaling")
    shown = []
    with log.watching(bar, interval=3600):  # samples driven by hand below
        for step in (4.0, 3.0, 2.0, 5.0):
            now[0] += step
            state = log.sample()
            bar.set_postfix_str(log.progress_text(state), refresh=True)
            shown.append(out.getvalue().rsplit("\r", 1)[-1])
        now[0] += 6.0
    bar.close()
    # read at: 100 nominal (start), 104 nominal, 107 serious, 109 serious, 114 critical,
    # 120 fair (the end)
    assert log.seconds == {"nominal": 7.0, "serious": 7.0, "critical": 6.0}
    assert log.summary() == "thermal state: nominal 7s, serious 7s, critical 6s"
    assert "thermal" not in shown[0]
    assert "thermal: serious" in shown[1] and "thermal: critical" in shown[3]


def test_no_thermal_state_off_macos(monkeypatch):
    monkeypatch.setitem(sys.modules, "Foundation", None)  # import fails, as on Linux
    assert thermal.thermal_reader() is None
    assert thermal.HeatLog.for_this_machine() is None
    assert thermal.thermal_now() is None


def test_doctor_reports_thermal_state(fake_foundation, monkeypatch):
    from vs_coreml_esrgan.doctor import _thermal_row

    fake_foundation(2)
    assert _thermal_row() == "| thermal state | serious |"
    monkeypatch.setitem(sys.modules, "Foundation", None)
    assert _thermal_row() == "| thermal state | not readable here (macOS only) |"


@pytest.mark.slow
def test_job_shows_thermal_state_on_its_progress_line_and_summary(model, tmp_path):
    """The whole job under a terminal (a pty, so the progress bar draws) with the
    Foundation double on its path."""
    source = tmp_path / "in.mkv"
    ffmpeg("-f", "lavfi", "-i", f"{VIDEO}:duration=3", "-c:v", "libx264", source)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, FAKE_THERMAL_STATES="2",
               PYTHONPATH=os.pathsep.join([*paths, str(THERMAL_FAKE)]))
    main, secondary = pty.openpty()
    # a terminal 160 columns wide (a new pty has none, and tqdm draws nothing in 0)
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))
    process = subprocess.Popen([CLI, "upscale", str(source), str(tmp_path / "out.mkv"),
                                "--model", str(model), "--encoder", "ffv1"],
                               stdout=subprocess.PIPE, stderr=secondary, env=env, text=True)
    os.close(secondary)
    screen = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:
                return
            if not chunk:
                return
            screen.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    stdout, _ = process.communicate(timeout=600)
    reader.join(timeout=10)
    os.close(main)
    assert process.returncode == 0, screen.decode(errors="replace")
    assert "thermal: serious" in screen.decode(errors="replace")
    summary = stdout.splitlines()[-1]
    assert summary.startswith("thermal state: serious ") and "nominal" not in summary
    # A batch sums the states over its files.
    (tmp_path / "batch").mkdir()
    batch = subprocess.run([CLI, "upscale", str(source), "-o", str(tmp_path / "batch"),
                            "--model", str(model), "--encoder", "ffv1"],
                           capture_output=True, text=True, env=env, timeout=600)
    assert batch.returncode == 0, batch.stderr
    assert batch.stdout.splitlines()[-1].startswith("thermal state: serious ")


def test_thermal_state_beside_a_batch_file_name(fake_foundation):
    from tqdm import tqdm

    fake_foundation(1)
    out = io.StringIO()
    bar = tqdm(total=4, file=out, disable=False, mininterval=0)
    bar.set_postfix_str("ep 01.mkv")
    log = thermal.HeatLog(thermal.thermal_reader())
    with log.watching(bar, interval=3600):
        assert bar.postfix == "ep 01.mkv, thermal: fair"
    bar.close()
