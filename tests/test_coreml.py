"""Core ML conversion checked on any machine: the saved spec, the program executed by the
portable executor against PyTorch, the filter with .mlpackage models, and the cache."""

from __future__ import annotations

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


def test_no_biased_convolution_feeds_pixel_shuffle(make_checkpoint, tmp_path):
    package = convert_model(load_model(make_checkpoint(compact(scale=4))),
                            tmp_path / "c.mlpackage", tile=(16, 16))
    ops = _ops(package)
    producers = {out.name: op for op in ops for out in op.outputs}
    shuffles = [op for op in ops if op.type == "pixel_shuffle"]
    assert shuffles
    for shuffle in shuffles:
        source = producers[shuffle.inputs["x"].arguments[0].name]
        assert not (source.type == "conv" and "bias" in source.inputs), \
            "a convolution with bias feeds pixel_shuffle"


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
                            batch=2)
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


@needs_macos
@pytest.mark.parametrize("units", ["ane", "gpu", "cpu", "all"])
def test_coreml_backend_matches_the_executor(make_checkpoint, tmp_path, units):
    checkpoint = make_checkpoint(compact(scale=2, num_conv=3))
    package = convert_model(load_model(checkpoint), tmp_path / "m.mlpackage", tile=(32, 24))
    clip = clip_from_arrays(random_rgb(1, 40, 60, seed=8), vs.RGBS)
    coreml = frame_array(upscale(clip, package, overlap=4, backend="coreml",
                                 compute_units=units).get_frame(0))
    executor = frame_array(upscale(clip, package, overlap=4, backend="mil").get_frame(0))
    assert 10 * np.log10(1 / np.mean((coreml - executor) ** 2)) >= 45


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
        assert backend.runtime == runtime
        results[runtime] = backend(tiles).astype(np.float32)
        assert results[runtime].shape == (2, 3, 32, 48)
        assert 10 * np.log10(1 / np.mean((results[runtime] - expected) ** 2)) >= 45
    np.testing.assert_allclose(results["pyobjc"], results["coremltools"], atol=1e-3)
    assert create_coreml_backend(package).runtime == "pyobjc"  # the default where installed


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
    assert cli(["verify", str(package), "--against", str(checkpoint)]) == 0
    assert "(fp16, coreml via pyobjc)" in capsys.readouterr().out
    assert cli(["verify", str(package), "--against", str(checkpoint), "--runtime",
                "coremltools"]) == 0
    assert "(fp16, coreml via coremltools)" in capsys.readouterr().out
    assert cli(["inspect", str(package)]) == 0
    assert "device placement (ane):" in capsys.readouterr().out
