"""scripts/bench.py --encoder-speed runs end to end and reports every encoder it was given, or
why it could not measure one. Not a timed test: it checks rows, not speeds."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_encoder_benchmark_writes_a_row_per_encoder_and_size(tmp_path):
    out = tmp_path / "encoders.md"
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--encoder-speed",
                             "--sizes", "96x64,64x48", "--frames", "2", "--rounds", "2",
                             "--encoders", "x264,prores,hevc_videotoolbox", "--out", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    table = out.read_text()
    for size in ("96x64", "64x48"):
        x264 = re.search(rf"\| x264 \| `-c:v libx264 -crf 16` \| {size} \| ([\d.]+) \| "
                         r"([\d.]+)-([\d.]+) \| 1\.00 \|", table)
        assert x264, table
        low, median, high = float(x264[2]), float(x264[1]), float(x264[3])
        assert 0 < low <= median <= high
        assert re.search(rf"\| prores \| `-c:v prores_ks -profile:v 3` \| {size} \| [\d.]+ \|",
                         table)
    # Linux's ffmpeg has no VideoToolbox: named, with the reason, not silently left out.
    assert "- hevc_videotoolbox: not in this ffmpeg's `-encoders`" in table or \
        "| hevc_videotoolbox |" in table
