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
        # numbers as data: checked by the Python side, not truncated by VapourSynth's int()
        "clip:vnode;model:data:opt;tile:data[]:opt;overlap:data:opt;backend:data:opt;"
        "device:data:opt;precision:data:opt;batch:data:opt;compute_units:data:opt;"
        "prefer:data:opt;")
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


def test_hostile_arguments_through_vspipe(tmp_path, make_checkpoint):
    """One vspipe run: every call must raise vapoursynth.Error with a clean 'Upscale: '
    message (VapourSynth itself used to int() 4.5 and True, and raise a raw ValueError for
    'abc'); a non-UTF-8 file name is a path; frame errors carry the prefix too."""
    model = make_checkpoint(compact(scale=2, num_conv=1))
    odd_name = os.fsencode(tmp_path) + b"/caf\xe9.pth"  # Latin-1, not UTF-8
    Path(os.fsdecode(odd_name)).write_bytes(model.read_bytes())
    result = _run_vpy(tmp_path, f"""
        import sys
        clip = core.std.BlankClip(format=vs.YUV420P8, width=64, height=48, length=2)
        model = {str(model)!r}
        calls = [dict(overlap=4.5), dict(overlap=True), dict(batch=True), dict(tile='abc'),
                 dict(tile=[64, 'x']), dict(tile=2**40), dict(backend=b'\\xff'),
                 dict(model=b'/no/such/\\xff.pth'), dict(prefer='cool')]
        for call in calls:
            kwargs = dict(model=model) | call
            try:
                core.coreml_esrgan.Upscale(clip, **kwargs)
                print('ACCEPTED', call, file=sys.stderr)
            except vs.Error as exc:
                print('ERROR', str(exc).splitlines()[-1], file=sys.stderr)
        good = core.coreml_esrgan.Upscale(clip, model={odd_name!r})
        print('ODD NAME', good.width, good.height, file=sys.stderr)
        changed = core.std.Splice([clip[0], core.std.SetFrameProps(clip[1], _Matrix=10)])
        out = core.coreml_esrgan.Upscale(changed, model=model)
        try:
            out.get_frame(1)
        except vs.Error as exc:
            print('FRAME', str(exc).strip().splitlines()[-1], file=sys.stderr)
        good.set_output()
        """, "-e", "0")
    lines = result.stderr.decode(errors="replace").splitlines()
    assert result.returncode == 0, "\n".join(lines)
    errors = [line for line in lines if line.startswith(("ERROR", "ACCEPTED"))]
    assert errors == [
        "ERROR Upscale: overlap must be a non-negative int, got '4.5'",
        "ERROR Upscale: overlap must be a non-negative int, got 'True'",
        "ERROR Upscale: batch must be a positive int, got 'True'",
        "ERROR Upscale: tile must be a positive int or [width, height], got 'abc'",
        "ERROR Upscale: tile must be a positive int or [width, height], got 'x'",
        # torch runs a tile larger than the frame as the frame: a 2**40 tile is 64x48
        "ACCEPTED {'tile': 1099511627776}",
        "ERROR Upscale: backend must be UTF-8 text, got bytes b'\\xff'",
        "ERROR Upscale: model file '/no/such/\\udcff.pth' does not exist",
        "ERROR Upscale: prefer must be one of auto, speed, efficiency, got 'cool'",
    ]
    assert "ODD NAME 128 96" in lines
    assert ("FRAME vapoursynth.Error: Upscale: frame 1: _Matrix 10 (BT.2020 constant "
            "luminance) needs the transfer characteristics") in "\n".join(lines)
