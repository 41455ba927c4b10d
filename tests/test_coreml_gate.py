"""Never a wrong frame on a Mac: the parity gate, crashes kept in children, and backend
'auto' stepping down to torch, run here against doubles that lie the way Core ML was
reported to lie (tests/fakes/_lies.py names the reports)."""

# The fixtures imported from mac_doubles are taken as parameters of the same name.
# ruff: noqa: F811

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest
import torch
import vapoursynth as vs
from conftest import compact
from mac_doubles import child_env, mac, package  # noqa: F401 (fixtures)
from vs_helpers import clip_from_arrays, frame_array, random_rgb

from vs_coreml_esrgan import upscale
from vs_coreml_esrgan.backends import BackendError, fallback, parity_gate
from vs_coreml_esrgan.backends import coreml_backend as backend_module
from vs_coreml_esrgan.backends.coreml_child import trial_in_child
from vs_coreml_esrgan.backends.coreml_records import reference_file
from vs_coreml_esrgan.backends.mil_backend import create_mil_backend
from vs_coreml_esrgan.coreml.package import read_package
from vs_coreml_esrgan.network_spec import ModelError

pytestmark = pytest.mark.skipif(sys.platform == "darwin", reason="runs the macOS code "
                                "against doubles; on a Mac test_coreml.py runs it for real")


def test_gate_tiles_are_the_photograph_mirrored():
    photo = parity_gate.photo()
    assert photo.shape == (3, 96, 96) and photo.min() >= 0 and photo.max() <= 1
    tiles = parity_gate.gate_tiles((2, 3, 100, 200), np.float16)
    assert tiles.shape == (2, 3, 100, 200) and tiles.dtype == np.float16
    np.testing.assert_array_equal(tiles[0, :, :96, :96], photo.astype(np.float16))
    # mirrored beyond the photograph's edge: row 96 repeats row 95
    np.testing.assert_array_equal(tiles[0, :, 96, :96], photo[:, 95].astype(np.float16))
    assert not np.array_equal(tiles[0], tiles[1])  # a batch's tiles differ
    gray = parity_gate.gate_tiles((1, 1, 8, 8), np.float32)
    np.testing.assert_allclose(gray[0, 0], photo.mean(axis=0)[:8, :8], rtol=1e-6)


def test_judge_rejects_what_an_isfinite_check_lets_through():
    reference = parity_gate.gate_tiles((1, 3, 64, 64), np.float32)
    rounded = reference.astype(np.float16).astype(np.float32)
    assert parity_gate.judge(rounded, reference, "fp16").passed
    assert parity_gate.judge(reference, reference, "fp32").psnr == float("inf")
    # ultralytics PR #24944 / coremltools #2281: finite but wrong
    wrong = parity_gate.judge(reference * 0.9 + 0.05, reference, "fp16")
    assert not wrong.passed and wrong.reason.startswith("wrong output: PSNR ")
    assert 20 < wrong.psnr < 45
    # coremltools #1380: all zeros
    zeros = parity_gate.judge(np.zeros_like(reference), reference, "fp16")
    assert not zeros.passed and zeros.reason.startswith("near-constant output")
    # an fp16 network's typical error (about 50 dB) fails a float32 program's gate
    noisy = reference + np.random.default_rng(0).normal(0, 0.003, reference.shape)
    assert parity_gate.judge(noisy, reference, "fp16").passed
    assert not parity_gate.judge(noisy, reference, "fp32").passed
    nan = reference.copy()
    nan[0, 0, 0, 0] = np.nan
    assert parity_gate.judge(nan, reference, "fp16").reason == "1 NaN or infinite values"
    assert "shape" in parity_gate.judge(reference[:, :2], reference, "fp16").reason


def test_compiler_errors_are_picked_from_stderr():
    text = ("noise\nE5RT: ANECCompile() FAILED (11)\nE5RT: ANECCompile() FAILED (11)\n"
            "[MILCompilerForANE] Error: unsupported op\n")
    assert parity_gate.compiler_errors(text) == (
        "E5RT: ANECCompile() FAILED (11)", "[MILCompilerForANE] Error: unsupported op")


def test_zero_and_killing_units_fail_their_trial(mac, package, monkeypatch):
    made = package()
    info = read_package(made)
    compiled = backend_module.compiled_model(made)
    reference, _ = reference_file(made, compiled)
    child_env(monkeypatch, FAKE_COREML_ZERO_UNITS="1", FAKE_COREML_KILL_PREDICT_UNITS="3")
    zero = trial_in_child(compiled, info, "pyobjc", "gpu", reference=reference)
    assert zero.ran and not zero.usable and zero.rejected.startswith("near-constant output")
    killed = trial_in_child(compiled, info, "coremltools", "ane", reference=reference)
    assert killed.error == "crashed (SIGKILL)"
    assert killed.compiler_errors == ("E5RT: ANECCompile() FAILED: MILCompilerForANE error",)
    fine = trial_in_child(compiled, info, "pyobjc", "all", reference=reference)
    assert fine.usable and fine.psnr == float("inf")  # the doubles compute the program


def test_a_load_that_hangs_is_stopped_by_its_own_limit(mac, package, monkeypatch):
    from vs_coreml_esrgan.backends import coreml_child

    made = package()
    compiled = backend_module.compiled_model(made)
    child_env(monkeypatch, FAKE_COREML_LOAD_DELAY_MS="3=20000")
    monkeypatch.setattr(coreml_child, "LOAD_TIMEOUT_S", 1)
    slow = trial_in_child(compiled, read_package(made), "pyobjc", "ane", timeout=60)
    assert slow.error == ("TimeoutError: loading on ane took longer than 1 s (the Neural "
                          "Engine compiler may still be running)")


def test_wrong_neural_engine_is_never_used_even_when_fastest(mac, make_checkpoint,
                                                           monkeypatch, capfd):
    """FAKE_COREML_WRONG_UNITS=3 and the Neural Engine the fastest: 'auto' takes another
    unit, the frames are the executor's, and the line says why not the Neural Engine."""
    checkpoint = make_checkpoint(compact(scale=2, num_conv=2))
    child_env(monkeypatch, FAKE_COREML_WRONG_UNITS="3", FAKE_COREML_DELAY_MS="1=200,2=100")
    clip = clip_from_arrays(random_rgb(1, 20, 30, seed=5), vs.RGBS)
    coreml = frame_array(upscale(clip, checkpoint, overlap=2, prefer="efficiency")
                         .get_frame(0))
    said = capfd.readouterr().err
    assert re.search(r"Core ML: (gpu|all) chosen, ", said)
    assert "ane (Neural Engine) rejected: wrong output: PSNR " in said
    executor = frame_array(upscale(clip, checkpoint, overlap=2, backend="mil").get_frame(0))
    np.testing.assert_allclose(coreml, executor, atol=1e-3)


@pytest.mark.parametrize("lie", ["FAKE_COREML_ZERO_UNITS", "FAKE_COREML_WRONG_UNITS"])
def test_a_remembered_choice_that_now_lies_is_checked_at_load(mac, make_checkpoint,
                                                               monkeypatch, capfd, lie):
    """A tester's repro: the choice measured correct and saved; later every unit answers
    zeros (or wrong values). The saved verdict is not trusted: the loaded backend answers
    the photograph again, the unit is saved as failed, and 'auto' ends on torch, with
    frames equal to torch's."""
    checkpoint = make_checkpoint(compact(scale=2, num_conv=2))
    clip = clip_from_arrays(random_rgb(1, 20, 30, seed=6), vs.RGBS)
    frame_array(upscale(clip, checkpoint, overlap=2).get_frame(0))  # measured and saved
    assert re.search(r"Core ML: \w+ chosen", capfd.readouterr().err)
    child_env(monkeypatch, **{lie: "0,1,2,3"})
    got = frame_array(upscale(clip, checkpoint, overlap=2).get_frame(0))
    said = capfd.readouterr().err
    assert "correct when measured, now fail the check on the photograph" in said
    assert said.rstrip().endswith("running torch on the CPU instead")
    reference = frame_array(upscale(clip, checkpoint, overlap=2, backend="torch")
                            .get_frame(0))
    np.testing.assert_array_equal(got, reference)


def test_a_unit_that_kills_its_process_is_a_clear_error(mac, package, monkeypatch):
    """coremltools #2758: load fine, ANECCompile() FAILED on stderr, SIGKILL at the first
    prediction. Asked for explicitly: this process lives, the error names it all."""
    child_env(monkeypatch, FAKE_COREML_KILL_PREDICT_UNITS="3")
    clip = clip_from_arrays(random_rgb(1, 12, 16, seed=2), vs.RGBS)
    with pytest.raises(vs.Error) as raised:
        upscale(clip, package(), compute_units="ane")
    message = str(raised.value)
    assert message.startswith("upscale: Core ML compute units 'ane' failed the check on "
                              "this Mac (pyobjc: ane (Neural Engine) failed: crashed "
                              "(SIGKILL) [compiler: E5RT: ANECCompile() FAILED")
    assert "coremltools: ane (Neural Engine) failed: crashed (SIGKILL)" in message
    assert "`vs-coreml-esrgan doctor`" in message


def test_every_unit_lying_steps_down_to_torch(mac, make_checkpoint, monkeypatch, capfd):
    checkpoint = make_checkpoint(compact(scale=2, num_conv=2))
    child_env(monkeypatch, FAKE_COREML_WRONG_UNITS="0,1,2,3")
    clip = clip_from_arrays(random_rgb(1, 20, 30, seed=7), vs.RGBS)
    got = frame_array(upscale(clip, checkpoint, overlap=2).get_frame(0))
    said = capfd.readouterr().err.splitlines()
    steps = [line for line in said if "instead" in line]
    assert len(steps) == 2
    assert steps[0].startswith("vs_coreml_esrgan: Core ML cannot run this model correctly "
                               "here (Core ML gave no correct result on any compute units:")
    assert "rejected: wrong output" in steps[0]
    assert steps[0].endswith("running torch on the GPU (MPS, fp16) instead")
    assert "MPS is not available" in steps[1]
    assert steps[1].endswith("running torch on the CPU instead")
    reference = frame_array(upscale(clip, checkpoint, overlap=2, backend="torch")
                            .get_frame(0))
    np.testing.assert_array_equal(got, reference)
    # backend 'coreml' named: strict, no torch
    with pytest.raises(vs.Error, match=r"upscale: Core ML gave no correct result .*doctor"):
        upscale(clip, checkpoint, overlap=2, backend="coreml")


def test_a_missing_package_is_named_without_stepping_down(mac, tmp_path, capfd):
    clip = vs.core.std.BlankClip(format=vs.RGB24, width=16, height=12)
    with pytest.raises(vs.Error, match=r"upscale: Core ML package '.*gone\.mlpackage' "
                                       r"does not exist"):
        upscale(clip, tmp_path / "gone.mlpackage")
    assert "instead" not in capfd.readouterr().err


def test_an_architecture_that_does_not_convert_runs_on_torch(mac, tmp_path, capfd):
    from spandrel.architectures.DAT import DAT

    torch.manual_seed(0)
    network = DAT(img_size=64, in_chans=3, embed_dim=24, split_size=[2, 4], depth=[1],
                  num_heads=[2], expansion_factor=2, upscale=2, resi_connection="1conv",
                  upsampler="pixelshuffle").eval()
    checkpoint = tmp_path / "dat random.pth"
    torch.save(network.state_dict(), checkpoint)
    clip = clip_from_arrays(random_rgb(1, 24, 20, seed=3), vs.RGBS)
    got = frame_array(upscale(clip, checkpoint, tile=32, overlap=4).get_frame(0))
    steps = [line for line in capfd.readouterr().err.splitlines() if "instead" in line]
    assert "Core ML cannot run this model correctly here" in steps[0]
    assert "does not convert to Core ML" in steps[0] or "cannot be traced" in steps[0]
    assert steps[-1].endswith("running torch on the CPU instead")
    reference = frame_array(upscale(clip, checkpoint, tile=32, overlap=4, backend="torch")
                            .get_frame(0))
    np.testing.assert_array_equal(got, reference)


def test_the_fallback_order():
    assert fallback.routes("torch", is_package=False, on_mac=True) == (
        fallback.Route("torch"),)
    assert fallback.routes("auto", is_package=False, on_mac=False) == (
        fallback.Route("torch"),)
    assert fallback.routes("auto", is_package=True, on_mac=False) == (fallback.Route("mil"),)
    assert [r.describe() for r in fallback.routes("auto", is_package=False, on_mac=True)] \
        == ["Core ML", "torch on the GPU (MPS, fp16)", "torch on the CPU"]
    assert [r.describe() for r in fallback.routes("auto", is_package=True, on_mac=True)] \
        == ["Core ML", "the ML Program executor (CPU)"]
    said = []
    order = fallback.routes("auto", is_package=True, on_mac=True)

    def attempt(route):
        if route.backend == "coreml":
            raise BackendError("broken")
        return route.backend
    assert fallback.first_that_runs(order, attempt, said.append) == "mil"
    assert said == ["Core ML cannot run this model correctly here (broken); running the ML "
                    "Program executor (CPU) instead"]

    def bad_argument(route):
        raise TypeError("tile must be an int")
    with pytest.raises(TypeError):  # not a backend's failure: no step down
        fallback.first_that_runs(order, bad_argument, said.append)
    with pytest.raises(ModelError):
        fallback.first_that_runs(order, lambda r: (_ for _ in ()).throw(ModelError("x")),
                                 said.append)


def test_torch_gate_compares_with_torch_fp32_on_the_cpu(make_checkpoint, capsys,
                                                         monkeypatch, tmp_path):
    from vs_coreml_esrgan.backends import torch_gate

    checkpoint = make_checkpoint(compact(scale=2, num_conv=2))
    request = {"checkpoint": str(checkpoint), "device": "cpu", "precision": "fp32"}
    assert torch_gate.main([json.dumps(request)]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["passed"] and answer["psnr"] == float("inf")
    assert torch_gate.main([json.dumps({**request, "device": "nowhere"})]) == 1
    assert "BackendError" in capsys.readouterr().err
    # The parent: a child per device, its verdict kept; a failing device is an error.
    monkeypatch.setenv("VS_COREML_ESRGAN_CACHE", str(tmp_path / "cache"))
    assert torch_gate.check_torch_device(checkpoint, "cpu", "fp32", "a" * 64) \
        == float("inf")
    kept = list((tmp_path / "cache" / "choices").glob("*-torchcpu-*.json"))
    assert len(kept) == 1
    with pytest.raises(BackendError, match=r"torch on nowhere \(fp32\) failed the parity "
                                           r"check .*the check ended"):
        torch_gate.check_torch_device(checkpoint, "nowhere", "fp32", "b" * 64)


def test_reference_file_is_the_executors_answer(mac, package):
    made = package()
    compiled = backend_module.compiled_model(made)
    path, why = reference_file(made, compiled)
    assert why == ""
    with np.load(path) as saved:
        tiles, expected = saved["tiles"], saved["expected"]
    np.testing.assert_array_equal(expected, create_mil_backend(made)(tiles).astype(
        np.float32))
    assert reference_file(made, compiled) == (path, "")  # kept


def test_the_trial_checks_parity_in_its_child(mac, package, monkeypatch, capsys):
    """What each child runs, in this process: the parity verdict joins the timings."""
    from vs_coreml_esrgan.backends import coreml_trial
    from vs_coreml_esrgan.backends.coreml_child import trial_request

    made = package()
    info = read_package(made)
    compiled = backend_module.compiled_model(made)
    reference, _ = reference_file(made, compiled)
    request = trial_request(compiled, info, "pyobjc", "gpu", reference)
    assert coreml_trial.main([json.dumps(request)]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["psnr"] == float("inf") and "rejected" not in answer
    monkeypatch.setenv("FAKE_COREML_WRONG_UNITS", "1")
    assert coreml_trial.main([json.dumps(request)]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["rejected"].startswith("wrong output: PSNR ") and answer["psnr"] < 45


def test_devices_through_coremltools_when_pyobjc_lacks_them(mac, monkeypatch):
    """coremltools 8.1+: MLComputeDevice.get_all_compute_devices(), instances of classes
    named as Core ML's."""
    import coremltools.models.compute_device as compute_device

    from vs_coreml_esrgan.backends.coreml_devices import compute_devices

    monkeypatch.delattr(mac.CoreML, "MLAllComputeDevices")
    doubles = sys.modules["coremltools_doubles"]
    monkeypatch.setattr(compute_device.MLComputeDevice, "get_all_compute_devices",
                        classmethod(lambda cls: [doubles.MLCPUComputeDevice(),
                                                 doubles.MLGPUComputeDevice()]))
    assert compute_devices() == ("CPU", "GPU")
    monkeypatch.setattr(compute_device.MLComputeDevice, "get_all_compute_devices",
                        classmethod(lambda cls: None.get_all_compute_devices()))
    assert compute_devices() is None  # no native library: cannot say


def test_torch_gate_verdicts_expire_and_reruns(make_checkpoint, monkeypatch, tmp_path):
    from vs_coreml_esrgan.backends import torch_gate

    monkeypatch.setenv("VS_COREML_ESRGAN_CACHE", str(tmp_path / "cache"))
    checkpoint = make_checkpoint(compact(scale=2, num_conv=2))
    calls = []
    in_child = torch_gate._in_child

    def child(path, device, precision):
        calls.append(device)
        return {"passed": False, "psnr": 30.0, "reason": "wrong output", "measured_at":
                torch_gate.time.time(), "torch": torch_gate._torch_version()}

    monkeypatch.setattr(torch_gate, "_in_child", child)
    for _ in range(2):
        with pytest.raises(BackendError, match="wrong output"):
            torch_gate.check_torch_device(checkpoint, "cpu", "fp16", "c" * 64)
    assert calls == ["cpu"]  # the failure is kept
    (kept,) = (tmp_path / "cache" / "choices").glob("*-torchcpu-*.json")
    kept.write_text(kept.read_text().replace(torch_gate._torch_version(), "0.0"))
    with pytest.raises(BackendError):
        torch_gate.check_torch_device(checkpoint, "cpu", "fp16", "c" * 64)
    assert calls == ["cpu", "cpu"]  # another torch: checked again
    kept.write_text("{damaged")
    with pytest.raises(BackendError):
        torch_gate.check_torch_device(checkpoint, "cpu", "fp16", "c" * 64)
    assert len(calls) == 3

    def no_python():
        raise BackendError("no Python interpreter found")
    monkeypatch.setattr(torch_gate, "python_executable", no_python)
    verdict = in_child(checkpoint, "cpu", "fp16")
    assert verdict["transient"] and not verdict["passed"]
    assert verdict["reason"] == "could not start the check: no Python interpreter found"
