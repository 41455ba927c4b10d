"""A batch on this machine and on a real Dask scheduler with two local worker processes:
the clustered output equals a straight run's, a worker killed mid-job changes nothing,
an input a worker cannot see is refused naming the worker, a broken file does not stop
the others.

Kept small for CI's budget: one 32x24 clip of 6 frames, one module-wide cluster, the
straight reference made once (in-process, through the same run_job as the CLI)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from media_files import CLI, FFMPEG, children, ffmpeg, tiny_model

from vs_coreml_esrgan.job.batch import Entry, Report, plan_entries, run_local
from vs_coreml_esrgan.job.plan import JobRequest
from vs_coreml_esrgan.job.script import UpscaleOptions

distributed = pytest.importorskip("distributed", reason="needs the cluster extra "
                                  "(pip install 'vs-coreml-esrgan[cluster]')")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """good.mkv (6 frames with AAC audio starting before the video) and broken.mkv."""
    folder = tmp_path_factory.mktemp("in put")
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=32x24:rate=10:duration=0.6", "-f", "lavfi",
           "-i", "sine=frequency=300:sample_rate=48000:duration=0.8", "-filter_complex",
           "[0:v]setpts=PTS+0.2/TB[v]", "-map", "[v]", "-map", "1:a", "-c:v", "libx264",
           "-c:a", "aac", folder / "good.mkv")
    (folder / "broken.mkv").write_text("not a video")
    return folder


def _request(model: Path, **changes) -> JobRequest:
    return replace(JobRequest(Path(), Path(), UpscaleOptions(str(model), None, None, "auto"),
                              encoder="ffv1"), **changes)


@pytest.fixture(scope="module")
def straight(model, inputs, tmp_path_factory) -> tuple[Path, Report]:
    """A local batch of good.mkv and broken.mkv: good.mkv upscaled straight (no segments)
    is the reference every clustered output is compared with."""
    out = tmp_path_factory.mktemp("straight")
    entries = [Entry(inputs / name, out / name) for name in ("broken.mkv", "good.mkv")]
    planned, known = plan_entries(entries, _request(model))
    report = Report(list(known))
    run_local(planned, None, lambda message: None, report)
    return out / "good.mkv", report


@pytest.fixture(scope="module")
def farm():
    """A scheduler and two worker processes, one task thread each, one compute thread per
    segment (two segments share the two cores)."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0", env={"VS_COREML_ESRGAN_WORKER_THREADS": "1"}
                      ) as cluster, Client(cluster) as client:
        yield cluster.scheduler_address, client


def _hashes(path: Path, stream: str) -> list[str]:
    out = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-map", f"0:{stream}",
                          "-f", "framemd5", "-"], capture_output=True, text=True,
                         check=True).stdout
    return [line.rsplit(",", 1)[1].strip() for line in out.splitlines()
            if line and not line.startswith("#")]


def _same_as_straight(output: Path, reference: Path) -> None:
    assert len(_hashes(output, "v")) == 6
    assert _hashes(output, "v") == _hashes(reference, "v")
    assert _hashes(output, "a") == _hashes(reference, "a")  # the audio, sample for sample
    assert len(_hashes(reference, "a")) > 30  # 0.8 s of AAC frames of 1024 samples


def test_local_batch_finishes_the_others(straight):
    reference, report = straight
    assert [(o.entry.source.name, o.status) for o in report.outcomes] == [
        ("broken.mkv", "failed"), ("good.mkv", "done")]
    assert "not a readable media file" in report.outcomes[0].detail
    assert not (reference.parent / "broken.mkv").exists()


def test_cluster_batch_equals_a_straight_run(model, inputs, straight, farm, tmp_path):
    address, _ = farm
    out = tmp_path / "out"
    out.mkdir()
    skipped = tmp_path / "skipped.mkv"
    skipped.write_bytes(b"")
    (out / "skipped.mkv").write_bytes(b"precious")
    result = subprocess.run([CLI, "upscale", inputs / "good.mkv", inputs / "broken.mkv",
                             skipped, "-o", out, "--model", model, "--encoder", "ffv1",
                             "--chunks", "2"], capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, VS_COREML_ESRGAN_CLUSTER=address))
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "summary: 1 done, 1 skipped, 1 failed"
    assert lines[1] == (f"  done        {inputs / 'good.mkv'} -> {out / 'good.mkv'}: "
                        "6 frames (6 processed now)")
    assert lines[2].startswith(f"  failed      {inputs / 'broken.mkv'}: ")
    assert lines[3].startswith(f"  skipped     {skipped}: {out / 'skipped.mkv'} exists")
    # one backend (auto: torch here, Core ML on a Mac), device and precision on both workers
    assert re.fullmatch(r"cluster: 2 workers checked, computing with \w+( \w+)?"
                        r"( (fp32|bf16|fp16))? \(2\)", lines[4])
    assert lines[5].startswith("segments computed: ")
    _same_as_straight(out / "good.mkv", straight[0])
    assert (out / "skipped.mkv").read_bytes() == b"precious"
    assert sorted(p.name for p in out.iterdir()) == ["good.mkv", "skipped.mkv"]


def _running_vspipe(pid: int) -> bool:
    for child in children(pid):
        try:
            if b"vspipe" in Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[0]:
                return True
        except OSError:
            continue
    return False


def _kill_tree(pid: int) -> None:
    """A machine that goes away: the worker and the vspipe and ffmpeg it started."""
    doomed = [pid]
    for parent in doomed:
        doomed += children(parent)
    for victim in doomed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds a worker's vspipe "
                    "in /proc")
def test_killed_worker_still_yields_the_same_output(model, inputs, straight, farm,
                                                   tmp_path):
    from vs_coreml_esrgan.job.cluster import check_inputs, connect, run_on_cluster

    address, client = farm
    pids = client.run(os.getpid)
    out = tmp_path / "good.mkv"
    planned, known = plan_entries([Entry(inputs / "good.mkv", out)],
                                  _request(model, chunks=2))
    assert not known
    report = Report()
    job_client = connect(address)
    workers = check_inputs(job_client, [inputs / "good.mkv"])
    run = threading.Thread(target=run_on_cluster, args=(job_client, workers, planned, None,
                                                        lambda m: None, report))
    run.start()
    deadline = time.monotonic() + 120
    victim = None
    while victim is None and run.is_alive() and time.monotonic() < deadline:
        victim = next((a for a, pid in pids.items() if _running_vspipe(pid)), None)
        time.sleep(0.05)
    assert victim is not None, "no worker started a segment"
    _kill_tree(pids[victim])
    run.join(timeout=300)
    job_client.close()
    assert not run.is_alive()
    assert [o.status for o in report.outcomes] == ["done"], report.outcomes
    survivor = next(a for a in pids if a != victim)
    ran = report.notes[-1]  # the lost segment ran again on the other worker
    assert ran.startswith("segments computed: ") and ran.endswith(f"({survivor}) 2")
    _same_as_straight(out, straight[0])


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0
                    or not shutil.which("unshare"),
                    reason="hides a file from the workers in a mount namespace of the "
                    "client's own (Linux, root, unshare)")
def test_input_a_worker_cannot_see_is_refused_naming_it(model, inputs, farm, tmp_path):
    address, client = farm
    client.wait_for_workers(2, timeout=120)  # the worker killed above is back (a new one)
    hidden = tmp_path / "only here"
    hidden.mkdir()
    out = tmp_path / "out.mkv"
    # The client mounts a private tmpfs over the folder and puts the input there: the
    # workers, outside its mount namespace, see the folder empty.
    command = (f'mount -t tmpfs tmpfs "$1" && cp "$2" "$1/good.mkv" && exec "$3" upscale '
               f'"$1/good.mkv" "$4" --model "$5" --cluster {address}')
    result = subprocess.run(["unshare", "-m", "sh", "-c", command, "sh", hidden,
                             inputs / "good.mkv", CLI, out, model], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 1, result.stderr
    workers = sorted(client.nthreads())
    assert len(workers) == 2
    for worker in workers:
        assert f"cannot see {hidden / 'good.mkv'} (no such file)" in result.stderr
        assert worker in result.stderr
    assert "every worker must see the input at the same path" in result.stderr
    assert not out.exists() and list(hidden.iterdir()) == []


def test_a_busy_farm_is_never_taken_for_an_empty_one(farm):
    """The liveness check (``_worker_names``, polled while segments run) asks the
    scheduler, not the client's cache: the cache's own
    refresh lists no workers, and a 320x180 benchmark gave up on every file after one
    (its poll read the cache just after a refresh). The refresh runs every 5 ms here
    instead of 2 s, so a cache read would come back empty within a few hundred polls
    (measured: 14 of 383)."""
    import dask
    from distributed import Client

    from vs_coreml_esrgan.job.cluster import _worker_names

    address, farm_client = farm
    farm_client.wait_for_workers(2, timeout=120)
    expected = set(farm_client.nthreads())
    with dask.config.set({"distributed.client.scheduler-info-interval": "5ms"}), \
            Client(address, set_as_default=False) as client:
        seen = [set(_worker_names(client)) for _ in range(300)]
    assert all(names == expected for names in seen), \
        f"{sum(names != expected for names in seen)} of 300 polls missed a worker"


@pytest.mark.parametrize("address", ["http://127.0.0.1:9", "inproc://127.0.0.1:9"])
def test_only_dasks_transports_pass_the_address_check(address, tmp_path):
    """http:// passed the check, then Dask hung 20 s and printed a TimeoutError traceback
    from Client.__del__ at exit."""
    result = subprocess.run([CLI, "upscale", str(tmp_path / "in.mkv"), str(tmp_path / "o.mkv"),
                             "--cluster", address], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"Dask has no {address.split(':')[0]}:// transport" in result.stderr
    assert "tcp://" in result.stderr
