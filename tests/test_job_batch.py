"""vs-coreml-esrgan upscale IN... -o OUTDIR: which files, which outputs, and what is
refused before any work. (Running a batch: tests/test_job_cluster.py, which shares its
media and reference output with the cluster tests.)"""

from __future__ import annotations

import subprocess
import sys

import pytest
from media_files import job

from vs_coreml_esrgan.job.batch import batch_entries, collect_sources
from vs_coreml_esrgan.job.media import JobError


def test_name_clashes_are_refused_before_work(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "Ep1.mp4").write_bytes(b"x")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(JobError, match=r"would both be written to .*ep1\.mkv; rename one"):
        batch_entries([tmp_path / "a" / "Ep1.mp4", tmp_path / "b" / "Ep1.mp4".lower()], out)
    result = job(tmp_path / "a", tmp_path / "b", "-o", out)
    assert result.returncode == 1 and "would both be written to" in result.stderr
    assert list(out.iterdir()) == []


def test_inputs_are_collected_once_in_order(tmp_path):
    for name in ("b.mkv", "a.mp4", ".a.partial.mkv", "c.srt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.mkv").write_bytes(b"x")
    found = collect_sources([tmp_path, tmp_path / "b.mkv", tmp_path / "missing.mkv"])
    assert found == [tmp_path / "a.mp4", tmp_path / "b.mkv", tmp_path / "missing.mkv"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(JobError, match="empty holds no video files"):
        collect_sources([tmp_path / "empty"])
    with pytest.raises(JobError, match="is also an input directory"):
        batch_entries([tmp_path], tmp_path)


def test_single_file_form_keeps_its_rules(tmp_path):
    result = job(tmp_path / "a.mkv", tmp_path / "b.mkv", tmp_path / "c.mkv")
    assert result.returncode == 2 and "IN [IN ...] -o OUTDIR" in result.stderr
    result = job(tmp_path / "a.mkv", tmp_path / "b.mkv", "--container", "mp4")
    assert result.returncode == 2 and "--container applies to a batch" in result.stderr


def test_nothing_of_dask_is_imported_without_a_cluster():
    code = ("import sys\n"
            "from vs_coreml_esrgan.cli import build_parser\n"
            "import vs_coreml_esrgan.job.batch, vs_coreml_esrgan.job.cluster_worker\n"
            "build_parser().parse_args(['upscale', 'a', '-o', 'b'])\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('dask', 'distributed')))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


def test_cluster_address_checked_before_any_work(tmp_path):
    result = job(tmp_path / "missing.mkv", "-o", tmp_path, "--cluster", "studio.local")
    assert result.returncode == 1
    assert "--cluster takes the scheduler's address as `dask scheduler` prints it, " \
        "tcp://HOST:PORT" in result.stderr and "got 'studio.local'" in result.stderr


class _Client:
    """Stands in for a Dask client whose workers answer the engine check as given."""

    def __init__(self, facts: dict) -> None:
        self.facts = facts
        self.asked: tuple = ()

    def run(self, function, *args, workers, on_error):
        self.asked = args
        return {address: self.facts[address] for address in workers}


def test_workers_computing_in_different_precisions_are_refused():
    """bf16 where a CPU has it natively, fp32 elsewhere: segments would differ."""
    from types import SimpleNamespace

    from vs_coreml_esrgan.job.cluster import Workers, check_engines
    from vs_coreml_esrgan.job.cluster_worker import EngineFacts

    request = SimpleNamespace(upscale=SimpleNamespace(model="m.pth", backend="auto",
                                                      precision=None))
    planned = [SimpleNamespace(job=SimpleNamespace(request=request, model_digest="d",
                                                   info=SimpleNamespace(namespace="builtin")))]
    workers = Workers(["tcp://a:1", "tcp://b:1"], {"tcp://a:1": "a", "tcp://b:1": "b"})
    mixed = _Client({"tcp://a:1": EngineFacts("torch", "cpu", [], "bf16"),
                     "tcp://b:1": EngineFacts("torch", "cpu", [], "fp32")})
    with pytest.raises(JobError, match=r"different precisions \(a: torch cpu bf16, b: torch "
                                       r"cpu fp32\).*--precision fp32"):
        check_engines(mixed, workers, planned)
    assert mixed.asked[-1] == "auto"  # the job's precision is what each worker resolves
    same = _Client({"tcp://a:1": EngineFacts("torch", "cpu", [], "fp32"),
                    "tcp://b:1": EngineFacts("torch", "cpu", [], "fp32")})
    assert "torch cpu fp32 (2)" in check_engines(same, workers, planned)
