"""scripts/bench.py --peers runs end to end here and writes its table and chart.

Not a timed test: it checks that every runner produced a row, not how fast it was.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
