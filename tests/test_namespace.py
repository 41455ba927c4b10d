"""core.coreml_esrgan.Upscale: the native plugin namespace forwarding to Python."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import vapoursynth as vs
from conftest import compact, needs_source_filter

import vs_coreml_esrgan
from vs_coreml_esrgan import upscale
from vs_coreml_esrgan._plugin import development_library

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "sample.mp4"
BIN = Path(sys.executable).parent
VSPIPE = str(BIN / "vspipe")


def _plugin_env() -> dict[str, str]:
    """Environment for a subprocess that must see the namespace without importing the
    package: a development build is found through VapourSynth's extra plugin path."""
    env = dict(os.environ)
    library = development_library()
    if library is not None:
        env["VAPOURSYNTH_EXTRA_PLUGIN_PATH"] = str(library.parent)
    return env


def _run_vpy(tmp_path: Path, body: str, *args: str) -> subprocess.CompletedProcess:
    script = tmp_path / "script.vpy"
    script.write_text("import vapoursynth as vs\ncore = vs.core\n" + textwrap.dedent(body))
    return subprocess.run([VSPIPE, "-c", "y4m", *args, str(script), "-"], capture_output=True,
                          env=_plugin_env(), timeout=300)


def _y4m_frames(data: bytes, width: int, height: int) -> list[np.ndarray]:
    """Luma planes of a YUV420P8 y4m stream."""
    header, _, rest = data.partition(b"\n")
    assert header.startswith(b"YUV4MPEG2") and f" W{width} H{height} ".encode() in header
    size = width * height * 3 // 2
    frames = []
    for chunk in rest.split(b"FRAME\n")[1:]:
        assert len(chunk) == size
        frames.append(np.frombuffer(chunk, np.uint8, width * height).reshape(height, width))
    return frames


@needs_source_filter
def test_namespace_script_equals_python_api(tmp_path, make_checkpoint):
    model = make_checkpoint(compact(scale=2, num_conv=3))
    result = _run_vpy(tmp_path, f"""
        clip = core.bs.VideoSource({str(SAMPLE)!r})
        clip = core.coreml_esrgan.Upscale(clip, model={str(model)!r}, tile=[96, 64],
                                          overlap=8, batch=2)
        clip.set_output()
        """, "-e", "4")
    assert result.returncode == 0, result.stderr.decode()
    got = _y4m_frames(result.stdout, 640, 360)
    assert len(got) == 5
    expected = upscale(vs.core.bs.VideoSource(str(SAMPLE)), model, tile=(96, 64), overlap=8,
                       batch=2)
    for n in range(5):
        np.testing.assert_array_equal(got[n], np.asarray(expected.get_frame(n)[0]))


@pytest.mark.parametrize(("call", "message"), [
    ("clip, model='/no/such.pth'", "Upscale: model file '/no/such.pth' does not exist"),
    ("clip, model=MODEL, tile=[8], overlap=16", "Upscale: tile 8 is smaller than 2 x "
                                                "overlap + 1 = 33; use a"),
    ("3, model=MODEL", "Upscale: argument clip was passed an unsupported type"),
    ("clip, model=MODEL, precision='int4'", "Upscale: precision must be one of auto, fp32"),
    ("clip, model=MODEL, tile=[1, 2, 3]", "Upscale: tile must be a positive int or [width, "
                                          "height]"),
])
def test_bad_arguments_give_clean_errors(tmp_path, make_checkpoint, call, message):
    model = make_checkpoint(compact(scale=2, num_conv=1))
    call = call.replace("MODEL", repr(str(model)))
    result = _run_vpy(tmp_path, f"""
        clip = core.std.BlankClip(format=vs.YUV420P8, width=64, height=48)
        core.coreml_esrgan.Upscale({call}).set_output()
        """)
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr  # an error exit, not a crash (negative = signal)
    assert message in stderr
    assert "Traceback (most recent call last):\n  File \"vapoursynth.pyx\", line" not in \
        stderr.split(message)[0][-200:]  # the message itself is not a Python traceback


def test_introspection():
    plugin = vs.core.coreml_esrgan
    assert plugin.Upscale.signature.startswith(
        "clip:vnode;model:data:opt;tile:int[]:opt;overlap:int:opt;backend:data:opt;"
        "device:data:opt;precision:data:opt;batch:int:opt;")
    entry = next(p for p in vs.core.plugins() if p.namespace == "coreml_esrgan")
    assert entry.identifier == "io.github.vs-coreml-esrgan"
    major, minor = (int(v) for v in vs_coreml_esrgan.__version__.split(".")[:2])
    assert (entry.version.major, entry.version.minor) == (major, minor)


def test_in_process_call_equals_python_api(make_checkpoint):
    model = make_checkpoint(compact(scale=3, num_conv=2))
    clip = vs.core.std.BlankClip(format=vs.RGBS, width=20, height=14, color=[0.2, 0.6, 0.9])
    ours = vs.core.coreml_esrgan.Upscale(clip, model=str(model)).get_frame(0)
    theirs = upscale(clip, model).get_frame(0)
    for plane in range(3):
        np.testing.assert_array_equal(np.asarray(ours[plane]), np.asarray(theirs[plane]))


def test_several_cores_and_lifetimes(make_checkpoint):
    model = make_checkpoint(compact(scale=2, num_conv=1))
    library = development_library() or Path(vs.get_plugin_dir()) / (
        "libcoreml_esrgan.dylib" if sys.platform == "darwin" else "libcoreml_esrgan.so")
    result = subprocess.run([sys.executable, str(Path(__file__).with_name(
        "multi_core_script.py")), str(model), str(library)], capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().split() == ["ok", "0"]
