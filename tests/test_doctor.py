"""``vs-coreml-esrgan doctor`` off the Mac: the parts that exist here, and failing steps as
rows of the report rather than tracebacks."""

from __future__ import annotations

import re
import sys

import pytest
from conftest import compact

from vs_coreml_esrgan.cli import main as cli

pytestmark = pytest.mark.skipif(sys.platform == "darwin", reason="checks the Linux report")


def test_doctor_reports_what_runs_here(make_checkpoint, capsys):
    checkpoint = make_checkpoint(compact(scale=2, num_conv=2))
    assert cli(["doctor", str(checkpoint), "--size", "72x40"]) == 0
    report = capsys.readouterr().out
    assert report.startswith("# vs-coreml-esrgan doctor")
    assert re.search(r"\| coremltools \| \d+\.\d", report)
    # Core ML rule: multiples of 16 covering 72x40 in one tile (80x48, padded).
    assert "tile 80x48 (Core ML rule), 1 tiles per frame" in report
    assert re.search(r"- convert \(fp16\): \d+\.\d s", report)
    assert re.search(r"- parity, executor: max abs error \S+, PSNR \d+\.\d dB \(PASS", report)
    assert "- needs macOS: time, parity and compute plan per compute unit" in report
    assert "only against doubles of Core ML" in report  # says what was proven where
    # precision 'auto': bf16 on CPUs with native bfloat16, else fp32
    assert re.search(r"\| torch CPU (fp32|bf16) \| \d+\.\d \| \d+\.\d+ \|", report)
    assert re.search(r"\| executor \(mil, fp16 program\) \| \d+\.\d \| \d+\.\d+ \|", report)
    assert "Traceback" not in report


def test_a_failing_step_is_a_row(tmp_path, capsys):
    damaged = tmp_path / "damaged.pth"  # a missing one is refused before the report
    damaged.write_bytes(b"PK\x03\x04 not really a zip archive")
    # the report, and a non-zero exit for scripts: nothing about the model was checked
    assert cli(["doctor", str(damaged), "--size", "64x64"]) == 1
    report = capsys.readouterr().out
    assert "- model: failed: ModelError:" in report and "damaged.pth" in report
    assert "Traceback" not in report
