"""The bundled .vpy through VapourSynth's own vspipe, piped into a real ffmpeg."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import vapoursynth as vs
from conftest import compact, needs_source_filter

from vs_coreml_esrgan import upscale
from vs_coreml_esrgan.job.media import find_ffmpeg

pytestmark = needs_source_filter

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "samples" / "upscale.vpy"
SAMPLE = ROOT / "samples" / "sample.mp4"
VSPIPE = shutil.which("vspipe", path=str(Path(sys.executable).parent)) or "vspipe"


def _pipe(args: list[str]) -> tuple[int, int, bytes, str]:
    """vspipe -c y4m ... | ffmpeg -f rawvideo: (vspipe status, ffmpeg status, raw, stderr)."""
    vspipe = subprocess.Popen([VSPIPE, "-c", "y4m", *args, str(SCRIPT), "-"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ffmpeg = subprocess.run([find_ffmpeg(), "-hide_banner", "-loglevel", "error", "-i", "-",
                             "-f", "rawvideo", "-pix_fmt", "yuv420p", "-"],
                            stdin=vspipe.stdout, capture_output=True, timeout=300)
    vspipe.stdout.close()
    stderr = vspipe.stderr.read().decode(errors="replace")
    return vspipe.wait(timeout=60), ffmpeg.returncode, ffmpeg.stdout, stderr


def test_vpy_decodes_to_expected_frames(make_checkpoint):
    model = make_checkpoint(compact(scale=2, num_conv=2))
    status, ffmpeg_status, raw, stderr = _pipe(["-a", f"model={model}", "-e", "9"])
    assert (status, ffmpeg_status) == (0, 0), stderr
    width, height = 640, 360
    frame_bytes = width * height * 3 // 2
    assert len(raw) == 10 * frame_bytes
    # y4m into rawvideo is lossless: the frames are exactly what the filter computes.
    clip = upscale(vs.core.bs.VideoSource(str(SAMPLE)), model)
    for n in (0, 9):
        luma = np.frombuffer(raw, np.uint8, width * height, n * frame_bytes)
        expected = np.asarray(clip.get_frame(n)[0])
        np.testing.assert_array_equal(luma.reshape(height, width), expected)


@pytest.mark.parametrize(("args", "message"), [
    (["-a", "model=/no/such/model.pth"], "upscale: model file '/no/such/model.pth' does not "
                                         "exist"),
    (["-a", "model=esrgan-9000"], "upscale: unknown model 'esrgan-9000'"),
    # the default model's overlap is its receptive radius: 16 convolutions + 2
    (["-a", "tile=8"], r"upscale: tile 8 is smaller than 2 x overlap + 1 = 37"),
])
def test_bad_arguments_fail_cleanly(args, message):
    status, _, raw, stderr = _pipe(args)
    assert status != 0 and raw == b""
    assert message in stderr
