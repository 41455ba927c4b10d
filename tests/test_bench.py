"""scripts/bench.py --peers runs end to end here and writes its table and chart.

Not a timed test: it checks that every runner produced a row, not how fast it was.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import vapoursynth as vs

ROOT = Path(__file__).resolve().parent.parent


def test_peers_benchmark_writes_table_and_chart(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--peers",
                             "--size", "48x32", "--models", "random-compact", "--frames", "1",
                             "--rounds", "1", "--out-dir", str(tmp_path), "--out-name", "t"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    table = (tmp_path / "t.md").read_text()
    runners = ["ours: torch CPU fp32", "ours: mil (fp16 ML Program)"]
    runners += [label for namespace, label in (("ort", "vs-mlrt ORT CPU"),
                                               ("ov", "vs-mlrt OpenVINO CPU"))
                if hasattr(vs.core, namespace)]
    for runner in runners:
        assert f"| random-compact | {runner} |" in table
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_efficiency_benchmark_reports_each_backend(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--sizes",
                             "80x40", "--frames", "1", "--overlap", "4"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {cells[1]: cells for line in result.stdout.splitlines()
            if (cells := [c.strip() for c in line.strip("|").split("|")])[0] == "80x40"}
    assert set(rows) >= {"torch CPU fp32", "mil (fp16 ML Program)"}
    for cells in rows.values():
        tile_width, tile_height = (int(v) for v in cells[2].split("x"))
        tiles = int(cells[3])
        # compute waste is the computed tile area over the frame area
        assert float(cells[4]) == pytest.approx(tiles * tile_width * tile_height / (80 * 40),
                                                abs=1e-3)
        assert 0 < float(cells[7]) <= 1  # pipeline efficiency
