"""scripts/bench.py --peers runs end to end here and writes its table and chart.

Not a timed test: it checks that every runner produced a row, not how fast it was.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import vapoursynth as vs

from vs_coreml_esrgan.backends.torch_backend import resolve_precision

ROOT = Path(__file__).resolve().parent.parent


def test_peers_benchmark_writes_table_and_chart(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--peers",
                             "--size", "48x32", "--models", "random-compact", "--frames", "1",
                             "--rounds", "1", "--out-dir", str(tmp_path), "--out-name", "t",
                             # mil's row is the efficiency test's: one process less
                             "--runners", "torch,torch-fp32,ort,ov,ov-f32"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    table = (tmp_path / "t.md").read_text()
    auto = resolve_precision("auto", "cpu")
    together = [f"ours: torch CPU auto ({auto})"]
    if auto != "fp32":
        together.append("ours: torch CPU fp32")
    together += [label for namespace, label in (("ort", "vs-mlrt ORT CPU fp32"),
                                                ("ov", "vs-mlrt OpenVINO CPU default ("))
                 if hasattr(vs.core, namespace)]
    one_process, per_process = table.split("## One process per run")
    for runner in together:  # both methods
        assert f"| random-compact | 48x32 | {runner}" in one_process
        assert f"| random-compact | 48x32 | {runner}" in per_process
    assert "- ours: mil (fp16 ML Program): left out (--runners)" in table
    # s/frame, each round's, fps, efficiency, then the page faults each frame cost
    for method in (one_process, per_process):
        assert re.search(rf"\| {re.escape(together[0])} \| [0-9.]+ \| [0-9. ]+ \| [0-9.]+ "
                         r"\| [0-9.]+ \| [0-9]+ \|", method), method
    # the OpenVINO precision is read from OpenVINO itself, not assumed
    if hasattr(vs.core, "ov"):
        assert re.search(r"OpenVINO's CPU default .* is (bf16|f32|f16);", table)
        assert re.search(r"\| random-compact \| 48x32 \| one process \| [0-9.]+x \| "
                         r"[0-9.]+x \| [0-9.]+x \|", table)
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_efficiency_benchmark_reports_each_backend(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--sizes",
                             "80x40", "--frames", "2", "--overlap", "4", "--vs-threads", "2"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {cells[1]: cells for line in result.stdout.splitlines()
            if (cells := [c.strip() for c in line.strip("|").split("|")])[0] == "80x40"}
    auto = resolve_precision("auto", "cpu")
    assert set(rows) >= {f"torch CPU auto ({auto})", "mil (fp16 ML Program)"}
    for cells in rows.values():
        assert cells[2] == "2"  # VapourSynth threads, two frames requested at once
        tile_width, tile_height = (int(v) for v in cells[3].split("x"))
        tiles = int(cells[4])
        # compute waste is the computed tile area over the frame area
        assert float(cells[5]) == pytest.approx(tiles * tile_width * tile_height / (80 * 40),
                                                abs=1e-3)
        # pipeline efficiency: the backend's busy time (overlapping calls counted once)
        assert 0 < float(cells[8]) <= 1


def test_ceiling_benchmark_alternates_with_a_commit(tmp_path):
    """--ceiling --against: both pipelines measured in alternating rounds, with the floor
    and the ratios; the report is written where asked."""
    out = tmp_path / "ceiling.md"
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--ceiling",
                             "--cases", "480p:YUV420P8:f16,480p:RGBH:f32", "--frames", "1",
                             "--rounds", "2", "--against", "HEAD", "--out", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("round ") == 4  # 2 rounds x (this checkout, HEAD)
    table = out.read_text()
    times = r"[0-9]+ \([0-9]+-[0-9]+\)"
    ratio = r"[0-9.]+x \([0-9.]+-[0-9.]+\)"
    for frame in ("720x480 -> x4 YUV420P8, f16 tiles", "720x480 -> x4 RGBH, f32 tiles"):
        # old, new wall; fps; old, new CPU; floor; to floor; speed-up, fastest, CPU speed-up
        assert re.search(rf"\| {re.escape(frame)} \| {times} \| {times} \| [0-9.]+ \| "
                         rf"{times} \| {times} \| [0-9.]+ \| [0-9.]+x \| {ratio} \| "
                         rf"[0-9.]+x \| {ratio} \|", table), table
    assert "alternating" in table
