"""Core ML conversion checked on any machine: the saved spec, the program executed by the
portable executor against PyTorch, the filter with .mlpackage models, and the cache."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import vapoursynth as vs
from conftest import compact, random_network, rrdb
from vs_helpers import clip_from_arrays, frame_array, random_rgb

import vs_coreml_esrgan
from vs_coreml_esrgan import upscale
from vs_coreml_esrgan.catalogue import resolve_model
from vs_coreml_esrgan.checkpoint import load_model, model_sha256
from vs_coreml_esrgan.cli import main as cli
from vs_coreml_esrgan.coreml.convert import convert_model
from vs_coreml_esrgan.coreml.mil import MilProgram
from vs_coreml_esrgan.coreml.package import load_spec, read_package
from vs_coreml_esrgan.network_spec import ModelError

needs_macos = pytest.mark.skipif(sys.platform != "darwin", reason="needs macOS (Core ML "
                                 "predicts only there)")

SPECS = {"rrdb-x4": rrdb(scale=4), "rrdb-x2": rrdb(scale=2), "compact-x4": compact(scale=4),
         "compact-x3": compact(scale=3)}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    directory = tmp_path / "cache"
    monkeypatch.setenv("VS_COREML_ESRGAN_CACHE", str(directory))
    return directory


def _ops(package: Path) -> list:
    function = load_spec(package).mlProgram.functions["main"]
    return list(function.block_specializations[function.opset].operations)


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_convert_then_verify(make_checkpoint, tmp_path, capsys, name, precision):
    checkpoint = make_checkpoint(SPECS[name])
    package = tmp_path / f"{name}.mlpackage"
    assert cli(["convert", str(checkpoint), "-o", str(package), "--tile", "32x24",
                "--precision", precision, "--batch", "2"]) == 0
    assert cli(["verify", str(package), "--against", str(checkpoint)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1].startswith(f"PASS: {name}.mlpackage ({precision}, mil)")


@pytest.mark.parametrize("name", list(SPECS))
def test_executor_against_pytorch_independently(make_checkpoint, tmp_path, name):
    """The thresholds of the issue, computed here rather than by the verify command."""
    spec = SPECS[name]
    checkpoint = make_checkpoint(spec)
    network = random_network(spec)
    rng = np.random.default_rng(3)
    tiles = rng.random((1, 3, 24, 32), dtype=np.float32)
    with torch.inference_mode():
        reference = network(torch.from_numpy(tiles)).numpy()
    for precision in ("fp32", "fp16"):
        package = convert_model(load_model(checkpoint), tmp_path / f"{precision}.mlpackage",
                                tile=(32, 24), precision=precision)
        program = MilProgram.load(package)
        dtype = np.float16 if precision == "fp16" else np.float32
        got = program(tiles.astype(dtype)).astype(np.float32)
        if precision == "fp32":
            assert np.abs(got - reference).max() <= 1e-4
        else:
            mse = np.mean((np.clip(got, 0, 1) - np.clip(reference, 0, 1)) ** 2)
            assert 10 * np.log10(1 / mse) >= 45


def test_verify_fails_on_the_wrong_checkpoint(make_checkpoint, tmp_path, capsys):
    spec = compact(scale=2)
    package = tmp_path / "m.mlpackage"
    convert_model(load_model(make_checkpoint(spec, seed=1, name="one")), package,
                  tile=(16, 16), precision="fp32")
    other = make_checkpoint(spec, seed=2, name="two")
    assert cli(["verify", str(package), "--against", str(other)]) == 1
    assert capsys.readouterr().out.startswith("FAIL: m.mlpackage (fp32, mil)")


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_saved_spec(make_checkpoint, tmp_path, precision):
    checkpoint = make_checkpoint(compact(scale=4))
    package = convert_model(load_model(checkpoint), tmp_path / "c.mlpackage", tile=(40, 24),
                            batch=3, precision=precision)
    spec = load_spec(package)
    assert spec.WhichOneof("Type") == "mlProgram"
    for feature in (*spec.description.input, *spec.description.output):
        assert feature.type.WhichOneof("Type") == "multiArrayType"  # TensorType, no image
        array = feature.type.multiArrayType
        assert array.WhichOneof("ShapeFlexibility") is None  # fixed: no RangeDim
        assert array.dataType == (65552 if precision == "fp16" else 65568)  # FLOAT16/32
    assert list(spec.description.input[0].type.multiArrayType.shape) == [3, 3, 24, 40]
    assert list(spec.description.output[0].type.multiArrayType.shape) == [3, 3, 96, 160]
    info = read_package(package)
    assert info.metadata == {
        "arch": "Compact", "scale": "4", "tile": "40x24", "batch": "3", "precision": precision,
        "overlap": "6", "network": "Compact x4 (8nf, 4nc)",
        "source": checkpoint.name, "source_sha256": model_sha256(checkpoint),
        "version": info.metadata["version"]}
    assert info.metadata["version"] == vs_coreml_esrgan.__version__


@pytest.mark.parametrize("scale", [4, 2])
def test_compact_program_has_no_full_resolution_upsample_or_add(make_checkpoint, tmp_path,
                                                                scale):
    """The Neural-Engine-friendly tail: the residual enters before the pixel shuffle, so
    nothing but the shuffle itself runs at output resolution."""
    loaded = load_model(make_checkpoint(compact(scale=scale)))
    package = convert_model(loaded, tmp_path / "c.mlpackage", tile=(16, 12))
    ops = _ops(package)
    kinds = {op.type for op in ops}
    assert "upsample_nearest_neighbor" not in kinds
    producers = {out.name: op for op in ops for out in op.outputs}
    (shuffle,) = [op for op in ops if op.type == "pixel_shuffle"]
    assert producers[shuffle.inputs["x"].arguments[0].name].type == "add"
    # The shuffle is the last operation: no op consumes a full-resolution tensor.
    consumers = [op for op in ops for arg in op.inputs.values() for a in arg.arguments
                 if a.name == shuffle.outputs[0].name]
    assert consumers == [] or all(op.type in ("cast",) for op in consumers)
    # Same function as the checkpoint's own network (the float32 program, executed).
    fp32 = convert_model(loaded, tmp_path / "c32.mlpackage", tile=(16, 12), precision="fp32")
    tiles = torch.rand(1, 3, 12, 16)
    with torch.inference_mode():
        expected = loaded.network(tiles).numpy()
    got = MilProgram.load(fp32)(tiles.numpy())
    assert np.abs(got - expected).max() <= 1e-5


def test_refuses_to_overwrite_and_bad_settings(make_checkpoint, tmp_path):
    loaded = load_model(make_checkpoint(rrdb(scale=2)))
    existing = tmp_path / "here.mlpackage"
    existing.mkdir()
    with pytest.raises(ModelError, match="already exists"):
        convert_model(loaded, existing, tile=(16, 16))
    with pytest.raises(ModelError, match="multiple of 4, at least 4"):
        convert_model(loaded, tmp_path / "odd.mlpackage", tile=(15, 16))
    with pytest.raises(ModelError, match=r"must end in \.mlpackage"):
        convert_model(loaded, tmp_path / "x.mlmodel", tile=(16, 16))


def test_bicubic_models_say_why_they_cannot_convert(tmp_path):
    x2 = load_model(resolve_model("realesr-animevideov3-x2").path)
    with pytest.raises(ModelError, match="bicubic resize, which Core ML programs cannot"):
        convert_model(x2, tmp_path / "x2.mlpackage", tile=(16, 16))


def test_executor_names_unknown_operations(tmp_path):
    import coremltools as ct

    class Odd(torch.nn.Module):
        def forward(self, x):
            return torch.exp(x)

    traced = torch.jit.trace(Odd(), torch.rand(1, 3, 8, 8))
    model = ct.convert(traced, inputs=[ct.TensorType(name="input", shape=(1, 3, 8, 8))],
                       convert_to="mlprogram", minimum_deployment_target=ct.target.macOS13,
                       skip_model_load=True)
    model.save(str(tmp_path / "odd.mlpackage"))
    with pytest.raises(ModelError, match=r"operation 'exp' .* is not supported by the "
                                         r"portable executor"):
        MilProgram.load(tmp_path / "odd.mlpackage")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_filter_with_package_equals_torch(make_checkpoint, tmp_path, precision):
    checkpoint = make_checkpoint(compact(scale=2, num_conv=3))
    package = convert_model(load_model(checkpoint), tmp_path / "m.mlpackage", tile=(32, 24),
                            batch=2, precision=precision)
    clip = clip_from_arrays(random_rgb(2, 50, 70, seed=4), vs.RGBS)
    through_mil = upscale(clip, package, overlap=4, backend="mil")
    through_torch = upscale(clip, checkpoint, tile=(32, 24), overlap=4, backend="torch",
                            batch=2, precision="fp32")
    for n in range(2):
        a, b = frame_array(through_mil.get_frame(n)), frame_array(through_torch.get_frame(n))
        if precision == "fp32":
            assert np.abs(a - b).max() <= 1e-4
        else:
            assert 10 * np.log10(1 / np.mean((a - b) ** 2)) >= 45


def test_package_arguments_that_disagree(make_checkpoint, tmp_path):
    package = convert_model(load_model(make_checkpoint(compact(scale=2))),
                            tmp_path / "m.mlpackage", tile=(48, 40), batch=2)
    clip = vs.core.std.BlankClip(format=vs.RGB24, width=96, height=64)
    with pytest.raises(vs.Error, match=r"upscale: tile 64x64 disagrees with the package's "
                                       r"compiled tile 48x40"):
        upscale(clip, package, tile=64, backend="mil")
    with pytest.raises(vs.Error, match="upscale: batch 1 disagrees with the package's "
                                       "compiled batch 2"):
        upscale(clip, package, batch=1, backend="mil")
    with pytest.raises(vs.Error, match=r"upscale: a \.mlpackage runs with backend 'coreml'"):
        upscale(clip, package, backend="torch")
    with pytest.raises(vs.Error, match=r"upscale: precision 'fp32' disagrees with the "
                                       r"package's compiled precision 'fp16'; omit"):
        upscale(clip, package, precision="fp32", backend="mil")
    with pytest.raises(vs.Error, match=r"upscale: precision 'bf16' applies to backend "
                                       r"'torch' only"):
        upscale(clip, package, precision="bf16")
    assert upscale(clip, package, precision="fp16").width == 192  # its own: fine
    assert upscale(clip, package).width == 192  # auto picks the executor off the Mac


def test_checkpoint_converted_once_into_the_cache(make_checkpoint, cache, capfd):
    checkpoint = make_checkpoint(compact(scale=2, num_conv=2))
    clip = clip_from_arrays(random_rgb(1, 30, 40, seed=2), vs.RGBS)
    first = frame_array(upscale(clip, checkpoint, backend="mil").get_frame(0))
    assert "converting model.pth" in capfd.readouterr().err
    entries = list((cache / "packages").iterdir())
    assert len(entries) == 1 and (entries[0] / "model.mlpackage" / "Manifest.json").is_file()
    stamp = (entries[0] / "sha256").stat().st_mtime_ns
    second = frame_array(upscale(clip, checkpoint, backend="mil").get_frame(0))
    assert "converting" not in capfd.readouterr().err  # reused, not converted again
    assert (entries[0] / "sha256").stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(first, second)


def test_damaged_cache_entry_is_rebuilt(make_checkpoint, cache, capfd):
    checkpoint = make_checkpoint(compact(scale=2, num_conv=2))
    clip = clip_from_arrays(random_rgb(1, 30, 40, seed=2), vs.RGBS)
    expected = frame_array(upscale(clip, checkpoint, backend="mil").get_frame(0))
    entry = next((cache / "packages").iterdir())
    weights = entry / "model.mlpackage" / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    weights.write_bytes(weights.read_bytes()[:100])  # a crash or a disk error
    capfd.readouterr()
    again = frame_array(upscale(clip, checkpoint, backend="mil").get_frame(0))
    assert "was damaged; converting again" in capfd.readouterr().err
    np.testing.assert_array_equal(again, expected)


def test_cache_command(make_checkpoint, cache, capsys):
    checkpoint = make_checkpoint(compact(scale=2, num_conv=1))
    upscale(vs.core.std.BlankClip(format=vs.RGBS, width=16, height=16), checkpoint,
            backend="mil")
    assert cli(["cache"]) == 0
    assert "packages/" in capsys.readouterr().out
    assert cli(["cache", "--clear"]) == 0
    assert capsys.readouterr().out.startswith("removed 1 entries")
    assert not any((cache / "packages").iterdir())


def test_console_script_reports_errors(tmp_path):
    script = Path(sys.executable).parent / "vs-coreml-esrgan"
    result = subprocess.run([str(script), "convert", str(tmp_path / "none.pth"), "-o",
                             str(tmp_path / "x.mlpackage"), "--tile", "64"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "vs-coreml-esrgan: error: model file" in result.stderr
    assert "does not exist" in result.stderr


def test_coreml_backend_off_macos_says_so(make_checkpoint, tmp_path):
    if sys.platform == "darwin":
        pytest.skip("on macOS the coreml backend is available")
    package = convert_model(load_model(make_checkpoint(compact(scale=2))),
                            tmp_path / "m.mlpackage", tile=(16, 16))
    clip = vs.core.std.BlankClip(format=vs.RGB24, width=16, height=16)
    with pytest.raises(vs.Error, match=r"upscale: backend 'coreml' needs macOS .* use "
                                       r"backend='mil'"):
        upscale(clip, package, backend="coreml")


def test_coreml_backend_off_macos_refuses_a_checkpoint_before_converting(
        make_checkpoint, tmp_path, monkeypatch):
    """A checkpoint with backend='coreml' off macOS: refused before the conversion (which
    takes minutes for a large model and leaves a package in the cache)."""
    if sys.platform == "darwin":
        pytest.skip("on macOS the coreml backend is available")
    monkeypatch.setenv("VS_COREML_ESRGAN_CACHE", str(tmp_path / "cache"))
    clip = vs.core.std.BlankClip(format=vs.RGB24, width=16, height=16)
    with pytest.raises(vs.Error, match=r"upscale: backend 'coreml' needs macOS"):
        upscale(clip, make_checkpoint(compact(scale=2)), backend="coreml")
    assert not list(tmp_path.rglob("*.mlpackage"))


_COMPARE_IN_A_CHILD = """
import sys
import numpy as np
import vapoursynth as vs
from vs_helpers import clip_from_arrays, frame_array, random_rgb
from vs_coreml_esrgan import upscale
package, units = sys.argv[1], sys.argv[2]
clip = clip_from_arrays(random_rgb(1, 40, 60, seed=8), vs.RGBS)
coreml = frame_array(upscale(clip, package, overlap=4, backend="coreml",
                             compute_units=units).get_frame(0))
executor = frame_array(upscale(clip, package, overlap=4, backend="mil").get_frame(0))
print(10 * np.log10(1 / np.mean((coreml - executor) ** 2)))
"""


@needs_macos
@pytest.mark.parametrize("units", ["ane", "gpu", "cpu", "all"])
def test_coreml_backend_matches_the_executor(make_checkpoint, tmp_path, units):
    """Each setting in a child process: an abort in Core ML or Metal (MPSGraph) fails this
    one case instead of ending the whole run."""
    checkpoint = make_checkpoint(compact(scale=2, num_conv=3))
    package = convert_model(load_model(checkpoint), tmp_path / "m.mlpackage", tile=(32, 24))
    done = subprocess.run([sys.executable, "-c", _COMPARE_IN_A_CHILD, str(package), units],
                          capture_output=True, text=True, timeout=600,
                          cwd=Path(__file__).parent)
    assert done.returncode == 0, (f"compute units {units}: exit status {done.returncode} "
                                  f"(negative: killed by a signal)\n{done.stderr[-3000:]}")
    assert float(done.stdout.strip().splitlines()[-1]) >= 45


def test_coreml_runtime_is_checked(make_checkpoint, tmp_path):
    from vs_coreml_esrgan.backends import BackendError
    from vs_coreml_esrgan.backends.coreml_backend import create_coreml_backend

    package = convert_model(load_model(make_checkpoint(compact(scale=2))),
                            tmp_path / "m.mlpackage", tile=(16, 16))
    with pytest.raises(BackendError, match="runtime must be one of auto, pyobjc, "
                                           "coremltools, got 'objc'"):
        create_coreml_backend(package, runtime="objc")


def test_pyobjc_runtime_without_its_bindings_says_what_to_install(tmp_path):
    from vs_coreml_esrgan.backends import BackendError
    from vs_coreml_esrgan.backends.coreml_pyobjc import load_pyobjc_predictor, pyobjc_available

    if pyobjc_available():
        pytest.skip("PyObjC's Core ML bindings are installed here")
    with pytest.raises(BackendError, match="pip install pyobjc-framework-CoreML"):
        load_pyobjc_predictor(tmp_path / "m.mlmodelc", "ane", input_name="input",
                              output_name="output", output_shape=(1, 3, 8, 8),
                              output_dtype=np.float16)


@needs_macos
@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_both_core_ml_runtimes_match_the_executor(make_checkpoint, tmp_path, precision):
    """PyObjC (buffers wrapped, output backings) and coremltools give the same tiles,
    within float16 of the executor, batches and the input dtype included."""
    from vs_coreml_esrgan.backends import BackendError
    from vs_coreml_esrgan.backends.coreml_backend import create_coreml_backend
    from vs_coreml_esrgan.backends.coreml_pyobjc import pyobjc_available
    from vs_coreml_esrgan.backends.mil_backend import create_mil_backend

    if not pyobjc_available():
        pytest.skip("needs pyobjc-framework-CoreML (the coreml extra on macOS)")
    package = convert_model(load_model(make_checkpoint(compact(scale=2, num_conv=3))),
                            tmp_path / "m.mlpackage", tile=(24, 16), batch=2,
                            precision=precision)
    tiles = np.random.default_rng(3).random((2, 3, 16, 24)).astype(
        np.float16 if precision == "fp16" else np.float32)
    expected = create_mil_backend(package)(tiles).astype(np.float32)
    results = {}
    for runtime in ("pyobjc", "coremltools"):
        backend = create_coreml_backend(package, compute_units="cpu", runtime=runtime)
        # PyObjC on IOSurface-backed buffers where its trial found them faster.
        assert backend.runtime in (runtime, f"{runtime}-iosurface")
        try:
            results[runtime] = backend(tiles).astype(np.float32)
        except BackendError as exc:  # documented: Core ML may decline the output backing
            assert runtime == "pyobjc" and "did not write into the output buffer" in str(exc)
            continue
        assert results[runtime].shape == (2, 3, 32, 48)
        assert 10 * np.log10(1 / np.mean((results[runtime] - expected) ** 2)) >= 45
    if "pyobjc" in results:
        np.testing.assert_allclose(results["pyobjc"], results["coremltools"], atol=1e-3)
    said = []
    default = create_coreml_backend(package, compute_units="cpu", notify=said.append)
    # The default where installed, unless its warm-up failed, which it then says.
    assert default.runtime.startswith("pyobjc") or any("PyObjC failed" in line
                                                       for line in said)


@needs_macos
def test_iosurface_buffers_match_the_executor(make_checkpoint, tmp_path, cache):
    """IOSurface-backed input and output (padded rows read by their stride) give the plain
    buffers' tiles; a 20-wide tile pads its rows whatever CoreVideo's alignment."""
    from vs_coreml_esrgan.backends.coreml_backend import compiled_model, load_backend
    from vs_coreml_esrgan.backends.coreml_iosurface import surfaces_available
    from vs_coreml_esrgan.backends.coreml_pyobjc import pyobjc_available
    from vs_coreml_esrgan.backends.mil_backend import create_mil_backend

    if not pyobjc_available() or not surfaces_available(np.float16, np.float16):
        pytest.skip("needs pyobjc-framework-CoreML and -Quartz (the coreml extra on macOS)")
    package = convert_model(load_model(make_checkpoint(compact(scale=2, num_conv=3))),
                            tmp_path / "m.mlpackage", tile=(20, 12), batch=2,
                            precision="fp16")
    info = read_package(package)
    tiles = np.random.default_rng(5).random(info.input_shape).astype(np.float16)
    surfaced = load_backend(compiled_model(package), "cpu", info, "pyobjc", "iosurface")
    got = surfaced(tiles).astype(np.float32)
    expected = create_mil_backend(package)(tiles).astype(np.float32)
    assert 10 * np.log10(1 / np.mean((got - expected) ** 2)) >= 45


@needs_macos
def test_compiled_model_is_cached(make_checkpoint, tmp_path, cache):
    from vs_coreml_esrgan.backends.coreml_backend import compiled_model

    package = convert_model(load_model(make_checkpoint(compact(scale=2))),
                            tmp_path / "m.mlpackage", tile=(16, 16))
    first = compiled_model(package)
    stamp = first.stat().st_mtime_ns
    assert compiled_model(package) == first and first.stat().st_mtime_ns == stamp


@needs_macos
def test_verify_and_inspect_with_core_ml(make_checkpoint, tmp_path, capsys):
    checkpoint = make_checkpoint(compact(scale=2, num_conv=3))
    package = tmp_path / "m.mlpackage"
    assert cli(["convert", str(checkpoint), "-o", str(package), "--tile", "32"]) == 0
    assert cli(["verify", str(package), "--against", str(checkpoint), "--compute-units",
                "cpu"]) == 0
    assert re.search(r"\(fp16, coreml via (pyobjc|coremltools)\)", capsys.readouterr().out)
    assert cli(["verify", str(package), "--against", str(checkpoint), "--runtime",
                "coremltools"]) == 0
    assert "(fp16, coreml via coremltools)" in capsys.readouterr().out
    assert cli(["inspect", str(package)]) == 0
    assert "device placement (ane):" in capsys.readouterr().out


@needs_macos
def test_compute_units_auto_on_this_mac(make_checkpoint, tmp_path, cache):
    """Whatever this Mac is, 'auto' picks a setting that ran, says so, and reuses it."""
    from vs_coreml_esrgan.backends.coreml_backend import create_coreml_backend

    package = convert_model(load_model(make_checkpoint(compact(scale=2, num_conv=3))),
                            tmp_path / "m.mlpackage", tile=(32, 24))
    said = []
    backend = create_coreml_backend(package, notify=said.append)
    assert backend.compute_units in ("ane", "gpu", "all", "cpu")
    assert said[-1].startswith(f"Core ML: {backend.compute_units} chosen")
    again = create_coreml_backend(package, notify=said.append)
    assert again.compute_units == backend.compute_units and "measured earlier" in said[-1]


@pytest.fixture(scope="module")
def small_package(tmp_path_factory):
    """A converted compact x2 package and its checkpoint, shared by the damage tests."""
    directory = tmp_path_factory.mktemp("small")
    checkpoint = directory / "small.pth"
    torch.save({"params": random_network(compact(scale=2, num_conv=2)).state_dict()},
               checkpoint)
    package = convert_model(load_model(checkpoint), directory / "small.mlpackage",
                            tile=(16, 16), precision="fp32")
    return package, checkpoint


def _weights(package: Path) -> Path:
    return package / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"


@pytest.mark.parametrize(("damage", "message"), [
    ("headers", r"weight file Data/com\.apple\.CoreML/weights/weight\.bin is damaged"),
    ("truncated", r"weight file Data/com\.apple\.CoreML/weights/weight\.bin is damaged"),
    ("missing", r"stored in Data/com\.apple\.CoreML/weights/weight\.bin, which is missing"),
])
def test_damaged_package_is_named_by_every_entry_point(small_package, tmp_path, capsys,
                                                       damage, message):
    import shutil

    package = tmp_path / "copy.mlpackage"
    shutil.copytree(small_package[0], package)
    weights = _weights(package)
    data = weights.read_bytes()
    if damage == "headers":  # every blob's metadata (sentinel, type, size) overwritten
        weights.write_bytes(data[:64] + bytes(len(data) - 64))
    elif damage == "truncated":
        weights.write_bytes(data[:len(data) // 2])
    else:
        weights.unlink()
    clip = vs.core.std.BlankClip(format=vs.RGB24, width=16, height=16)
    with pytest.raises(vs.Error, match=r"^upscale: .*copy\.mlpackage: .*" + message):
        upscale(clip, package, backend="mil")
    with pytest.raises(vs.Error, match=r"^Upscale: .*copy\.mlpackage: .*" + message):
        vs.core.coreml_esrgan.Upscale(clip, model=str(package), backend="mil")
    for command in (["verify", str(package), "--against", str(small_package[1])],
                    ["inspect", str(package)]):
        assert cli(command) == 2, command
        assert re.search(message + r".*convert the model again", capsys.readouterr().err)


def test_verify_says_the_scales_differ(small_package, make_checkpoint, capsys):
    other = make_checkpoint(compact(scale=4, num_conv=2))
    assert cli(["verify", str(small_package[0]), "--against", str(other)]) == 2
    assert re.search(r"small\.mlpackage upscales x2 but model\.pth is Compact x4 .*: "
                     r"the scales differ", capsys.readouterr().err)


def test_verify_reports_non_finite_output(tmp_path, capsys):
    """Finite weights whose activations overflow float16: the program computes infinities
    that the float32 checkpoint does not. 'max abs error 0' was printed for them."""
    checkpoint = tmp_path / "loud.pth"
    torch.save({"params": random_network(compact(scale=2, num_conv=3), std=5.0).state_dict()},
               checkpoint)
    package = convert_model(load_model(checkpoint), tmp_path / "loud.mlpackage",
                            tile=(16, 16), precision="fp16")
    assert cli(["verify", str(package), "--against", str(checkpoint)]) == 1
    out = capsys.readouterr().out
    assert re.match(r"FAIL: loud\.mlpackage \(fp16, mil\) computed \d+ NaN or infinite values "
                    r"on 2 random tiles where loud\.pth computes finite ones", out), out
    clip = clip_from_arrays(random_rgb(1, 16, 16), vs.RGBS)
    # advice that works for a package (precision='fp32' is refused for one)
    with pytest.raises(vs.Error, match=r"upscale: frame 0: the network computed \d+ NaN or "
                                       r"infinite values .* overflows float16 .* convert "
                                       r"--precision fp32"):
        upscale(clip, package, backend="mil").get_frame(0)
    huge = clip_from_arrays([np.full((3, 16, 16), 1e6, np.float32)], vs.RGBS)
    with pytest.raises(vs.Error, match=r"samples reach far outside \[0, 1\] .* clamp"):
        upscale(huge, package, backend="mil").get_frame(0)


def test_package_with_infinite_weights_is_refused(small_package, tmp_path):
    loaded = load_model(small_package[1])
    with torch.no_grad():
        next(loaded.network.parameters())[0, 0, 0, 0] = float("inf")
    package = convert_model(loaded, tmp_path / "inf.mlpackage", tile=(16, 16),
                            precision="fp32")
    with pytest.raises(vs.Error, match=r"upscale: .*inf\.mlpackage: the weights are not "
                                       r"finite: .* holds 1 NaN or infinite values"):
        upscale(vs.core.std.BlankClip(format=vs.RGB24, width=16, height=16), package,
                backend="mil")
    assert cli(["inspect", str(package)]) == 2


def test_convert_refuses_nan_weights_and_impossible_tiles(small_package, tmp_path, capsys):
    state = torch.load(small_package[1])["params"]
    state["body.0.weight"][0, 0, 0, 0] = float("nan")
    nan = tmp_path / "nan.pth"
    torch.save({"params": state}, nan)
    output = tmp_path / "out.mlpackage"
    assert cli(["convert", str(nan), "-o", str(output), "--tile", "32"]) == 2
    assert "nan.pth: the weights are not finite: body.0.weight (1 NaN" in \
        capsys.readouterr().err
    assert cli(["convert", str(small_package[1]), "-o", str(output), "--tile", "1"]) == 2
    assert "--tile 1x1 is too small: tiles of at least 16 pixels" in capsys.readouterr().err
    assert cli(["convert", str(small_package[1]), "-o", str(output), "--tile", "100000"]) == 2
    assert re.search(r"tile 100000x100000 with batch 1 needs about .* [GT]iB for the network, "
                     r"more than this machine's", capsys.readouterr().err)
    assert not output.exists()


def test_models_lists_what_it_can(tmp_path, monkeypatch, make_checkpoint, capsys):
    directory = tmp_path / "models"
    directory.mkdir()
    monkeypatch.setenv("VS_COREML_ESRGAN_MODELS", str(directory))
    good = make_checkpoint(compact(scale=3))
    (directory / "good.pth").write_bytes(good.read_bytes())
    (directory / "aaa-notes.pth").write_text("not weights")
    (directory / "broken.param").write_text("7767517\n")
    assert cli(["models"]) == 0
    captured = capsys.readouterr()
    lines = {line.split()[0]: line for line in captured.out.splitlines() if line}
    assert lines["good"].split()[1:3] == ["x3", "Compact"]
    assert lines["aaa-notes"].split()[1:3] == ["?", "unreadable"]
    assert lines["broken"].split()[1:3] == ["?", "unreadable"]
    assert re.search(r"warning: .*aaa-notes\.pth: not a readable PyTorch checkpoint",
                     captured.err)
    assert "broken.param" in captured.err


def test_cache_clear_deletes_only_what_it_made(make_checkpoint, cache, capsys):
    checkpoint = make_checkpoint(compact(scale=2, num_conv=1))
    upscale(vs.core.std.BlankClip(format=vs.RGBS, width=16, height=16), checkpoint,
            backend="mil")
    ours = next((cache / "packages").iterdir())
    theirs = [cache / "packages" / "holiday-photos" / "beach.jpg",
              cache / "packages" / "notes.txt", cache / "compiled" / "thesis" / "draft.tex",
              cache / "packages" / ("0" * 32) / "budget.xlsx"]  # our name, not our content
    for path in theirs:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("keep me")
    stale = cache / "packages" / f".{'a' * 32}.x1y2z3"  # an interrupted build of ours
    stale.mkdir()
    assert cli(["cache", "--clear"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("removed 1 entries")
    assert "left alone: 4 entries that vs-coreml-esrgan did not make" in captured.err
    assert not ours.exists() and not stale.exists()
    assert all(path.read_text() == "keep me" for path in theirs)
