"""The macOS-only Core ML code, run here against test doubles of PyObjC and coremltools
(tests/fakes/, built from those projects' metadata and sources, computing with the
executor): runtimes, compute plans, compute units 'auto' with real child processes."""

# The fixtures imported from mac_doubles are taken as parameters of the same name.
# ruff: noqa: F811

from __future__ import annotations

import json
import mmap
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import vapoursynth as vs
from conftest import compact
from mac_doubles import FAKES, child_env, mac, package  # noqa: F401 (fixtures)
from vs_helpers import clip_from_arrays, frame_array, random_rgb

from vs_coreml_esrgan import upscale
from vs_coreml_esrgan.backends import BackendError, macos
from vs_coreml_esrgan.backends import coreml_backend as backend_module
from vs_coreml_esrgan.backends.coreml_child import (
    Trial,
    coremltools_version,
    python_executable,
    trial_in_child,
)
from vs_coreml_esrgan.backends.coreml_plan import placement, share_of_cost
from vs_coreml_esrgan.backends.coreml_pyobjc import element_strides
from vs_coreml_esrgan.backends.coreml_records import record_path, save_trials
from vs_coreml_esrgan.backends.coreml_units import choose, choose_compute_units
from vs_coreml_esrgan.backends.mil_backend import create_mil_backend
from vs_coreml_esrgan.checkpoint import load_model
from vs_coreml_esrgan.coreml.convert import convert_model
from vs_coreml_esrgan.coreml.package import read_package

pytestmark = pytest.mark.skipif(sys.platform == "darwin", reason="runs the macOS code "
                                "against doubles; on a Mac test_coreml.py runs it for real")


def _tiles(info, seed=0):
    return np.random.default_rng(seed).random(info.input_shape).astype(info.input_dtype)


@pytest.mark.parametrize(("precision", "batch"), [("fp16", 1), ("fp32", 2)])
def test_pyobjc_runtime_gives_the_programs_output(mac, package, precision, batch):
    made = package(precision, batch)
    info = read_package(made)
    backend = backend_module.create_coreml_backend(made, compute_units="cpu",
                                                   runtime="pyobjc")
    assert backend.runtime == "pyobjc"
    tiles = _tiles(info)
    mac.CoreML.received_dictionaries.clear()
    mac.CoreML.wrapped_addresses.clear()
    got = backend(tiles)
    np.testing.assert_array_equal(got, create_mil_backend(made)(tiles).astype(got.dtype))
    assert got.dtype == info.output_dtype and got.shape == info.output_shape
    # Real NSDictionaries for the feed and the backings, never Python dict proxies.
    assert mac.CoreML.received_dictionaries == [sys.modules["Foundation"].NSDictionary] * 2
    # Input and output buffers start on a page.
    assert len(mac.CoreML.wrapped_addresses) == 2
    assert all(address % mmap.PAGESIZE == 0 for address in mac.CoreML.wrapped_addresses)


def test_strides_come_from_the_shape(mac, package):
    """``tile[None]`` is C-contiguous with a 0 stride on its first axis; Core ML gets
    the dense element strides all the same."""
    assert element_strides((2, 3, 4, 5)) == [60, 20, 5, 1]
    assert element_strides((1, 3, 12, 16)) == [576, 192, 16, 1]
    made = package()
    info = read_package(made)
    one = _tiles(info)[0]
    feed = one[None]
    assert feed.strides[0] == 0 and feed.flags.c_contiguous
    backend = backend_module.create_coreml_backend(made, compute_units="cpu",
                                                   runtime="pyobjc")
    mac.CoreML.wrapped_strides.clear()
    got = backend(feed)
    assert sorted(mac.CoreML.wrapped_strides) == sorted(
        [tuple(element_strides(info.input_shape)), tuple(element_strides(info.output_shape))])
    np.testing.assert_array_equal(got, create_mil_backend(made)(feed))


@pytest.mark.parametrize("version", ["15.1", "14.6"])
def test_a_declined_output_backing_is_copied(mac, package, monkeypatch, version):
    """Core ML may answer with its own array (here float32 with padded rows): copied with
    transferToMultiArray: on macOS 15, through getBytesWithHandler: with its strides
    before."""
    made = package()
    info = read_package(made)
    monkeypatch.setenv("FAKE_COREML_DECLINE_BACKING", "1")
    mac.version(version)
    backend = backend_module.create_coreml_backend(made, compute_units="cpu",
                                                   runtime="pyobjc")
    got = backend(_tiles(info))
    assert got.dtype == info.output_dtype
    np.testing.assert_array_equal(got, create_mil_backend(made)(_tiles(info)))


def test_core_ml_errors_become_backend_errors(mac, package, monkeypatch):
    made = package()
    info = read_package(made)
    mac.compiled_model.failures = {"load:CPU_AND_GPU": "Error loading model: MPSGraph"}
    with pytest.raises(BackendError, match=r"could not load .* on gpu: Error loading"):
        backend_module.create_coreml_backend(made, compute_units="gpu",
                                             runtime="coremltools")
    backend = backend_module.create_coreml_backend(made, compute_units="cpu",
                                                   runtime="coremltools")
    mac.compiled_model.failures = {"predict:CPU_ONLY": "Error computing NN outputs"}
    with pytest.raises(BackendError, match="prediction failed: Error computing NN"):
        backend(_tiles(info))
    # a prediction that fails at load (the check on the photograph): refused there
    with pytest.raises(BackendError, match=r"compute units 'cpu' failed the check .*"
                                           r"prediction failed: Error computing NN"):
        backend_module.create_coreml_backend(made, compute_units="cpu",
                                             runtime="coremltools")
    monkeypatch.setenv("FAKE_COREML_FAIL_UNITS", "1")
    with pytest.raises(BackendError, match=r"could not load .*ANECCompile"):
        backend_module.create_coreml_backend(made, compute_units="gpu", runtime="pyobjc")
    with pytest.raises(BackendError, match="compute_units must be one of auto, ane, gpu, "
                                           "cpu, all, got 'npu'"):
        backend_module.create_coreml_backend(made, compute_units="npu")
    monkeypatch.setattr(backend_module, "import_coremltools", lambda: _Broken())
    with pytest.raises(BackendError, match=r"could not compile .*no native library"):
        backend_module.compiled_model(package(batch=3))


class _Broken:
    class models:
        class utils:
            @staticmethod
            def compile_model(*_):
                raise Exception("Unable to compile any Core ML models. no native library")


def test_macos_before_13_is_refused_by_name(mac, package):
    mac.version("12.7.4")
    with pytest.raises(BackendError, match=r"needs macOS 13\.0 or later; this is macOS "
                                           r"12\.7\.4"):
        backend_module.create_coreml_backend(package(), compute_units="cpu")


def test_cost_shares_are_weighted_by_estimated_cost():
    # Three convs of weight 0.3 each on the Neural Engine, an add of 0.1 on the CPU.
    shares = share_of_cost(["Neural Engine"] * 3 + ["CPU"], [0.3, 0.3, 0.3, 0.1])
    assert shares.weighted
    assert shares.share("Neural Engine") == pytest.approx(0.9)
    assert shares.operations == {"Neural Engine": 3, "CPU": 1}
    assert shares.describe() == "Neural Engine 90 %, CPU 10 %"
    # An op without a device is 'unknown'; one without a cost weighs nothing.
    mixed = share_of_cost(["GPU", "unknown", "CPU"], [0.5, 0.5, None])
    assert mixed.shares == {"GPU": 0.5, "unknown": 0.5, "CPU": 0.0}
    # No cost at all: counted by operation, and said so.
    counted = share_of_cost(["GPU", "CPU", "CPU", "CPU"], [None] * 4)
    assert not counted.weighted and counted.share("CPU") == 0.75
    assert counted.describe().endswith("(by operation count: no cost estimates)")


def test_compute_plan_placement(mac, package):
    made = package()
    compiled = backend_module.compiled_model(made)
    named = [op.operator_name for op in mac.plan.load_from_path(
        str(compiled)).model_structure.program.functions["main"].block.operations]
    assert "ios16.conv" in named  # the plan's names carry the opset's prefix
    ops = [name.split(".")[-1] for name in named if not name.endswith("const")]
    convs = ops.count("conv")
    expected = convs * 9 / (convs * 9 + len(ops) - convs)
    ane = placement(compiled, "ane")
    assert ane.share("Neural Engine") == pytest.approx(expected)
    assert ane.share("CPU") == pytest.approx(1 - expected)
    assert placement(compiled, "gpu").share("GPU") == pytest.approx(expected)
    mac.plan.unplaced = ("add",)
    assert placement(compiled, "cpu").share("unknown") > 0
    mac.plan.unplaced = ()
    # A compiled model is laid out as Core ML's compiler lays it out, not as a package.
    assert {p.name for p in compiled.iterdir()} >= {"coremldata.bin", "model.mil", "weights",
                                                    "metadata.json"}
    assert not (compiled / "Manifest.json").exists()
    mac.version("14.3")
    with pytest.raises(BackendError, match=r"compute plan needs macOS 14\.4 or later; this "
                                           r"is macOS 14\.3"):
        placement(compiled, "ane")
    mac.version("14.4")
    with pytest.raises(BackendError, match=r"compute plan for .* failed"):
        placement(compiled.parent / "missing.mlmodelc", "ane")


def test_explicit_ane_warns_when_nothing_is_placed_on_the_neural_engine(mac, package):
    """The plan comes from the trial's child; a small program (two convolutions) is
    planned on the CPU whatever the units, as Core ML is seen to do."""
    said = []
    backend_module.create_coreml_backend(package(), compute_units="ane", notify=said.append)
    assert not any("plans none" in line for line in said)
    backend_module.create_coreml_backend(package(num_conv=0), compute_units="ane",
                                         notify=said.append)
    assert any("'ane' asked for the Neural Engine, but Core ML plans none of this model's "
               "cost there (CPU 100 %)" in line for line in said)


def _timings(ms: dict[str, float | str], share: float | None = 0.0, **fields):
    """A trial runner: a number is the time of a unit that passed, text its error;
    ``fields`` are added to every trial (psnr, rejected, measured_at ...)."""
    calls = []

    def run(units: str) -> Trial:
        calls.append(units)
        value = ms[units]
        stamp = {"measured_at": time.time(), "coremltools": coremltools_version(), **fields}
        if isinstance(value, str):
            return Trial(units, error=value, **stamp)
        return Trial(units, ms_per_tile=value, neural_engine_share=share, **stamp)
    return run, calls


def test_choice_is_the_fastest_unit_that_ran():
    run, calls = _timings({"ane": 88.0, "gpu": 31.0, "all": 35.0, "cpu": 10.0}, psnr=50.0)
    choice = choose(run, ("gpu", "ane", "all"))
    assert choice.units == "gpu" and calls == ["gpu", "ane", "all"]  # no cpu trial
    assert choice.message() == ("Core ML: gpu chosen, 31.0 ms/tile (PSNR 50.0 dB), prefer "
                                "speed; ane 88.0 ms, 0 % of the cost on the Neural Engine, "
                                "PSNR 50.0 dB; all 35.0 ms, 0 % of the cost on the Neural "
                                "Engine, PSNR 50.0 dB")
    run, _ = _timings({"ane": "crashed (SIGABRT)", "gpu": 31.0, "all": 12.0})
    choice = choose(run, ("gpu", "ane", "all"))
    assert choice.units == "all"
    assert "ane (Neural Engine) failed: crashed (SIGABRT)" in choice.message()
    run, calls = _timings({"ane": "x", "gpu": "y", "all": "z", "cpu": 50.0})
    assert choose(run, ("gpu", "ane", "all")).units == "cpu" and calls[-1] == "cpu"
    run, _ = _timings({"ane": "x", "gpu": "y", "all": "z", "cpu": "w"})
    with pytest.raises(BackendError, match=r"any compute units: gpu \(GPU\) failed: y; ane "
                                           r"\(Neural Engine\) failed: x; all \(all units\) "
                                           r"failed: z; cpu \(CPU\) failed: w"):
        choose(run, ("gpu", "ane", "all"))


def test_a_unit_that_fails_the_parity_gate_is_never_chosen():
    def run(units: str) -> Trial:
        if units == "ane":  # the fastest, but wrong
            return Trial("ane", ms_per_tile=5.0, psnr=27.0, rejected="wrong output: PSNR "
                         "27.0 dB against the reference (needs >= 45 dB)")
        return Trial(units, ms_per_tile={"gpu": 30.0, "all": 20.0}[units], psnr=60.0)

    choice = choose(run, ("gpu", "ane", "all"))
    assert choice.units == "all"
    assert ("ane (Neural Engine) rejected: wrong output: PSNR 27.0 dB" in choice.message())


@pytest.mark.parametrize(("ane_ms", "share", "expected"), [
    (50.0, 0.9, "ane"),   # within 2x of the fastest (30 ms): the Neural Engine
    (61.0, 0.9, "gpu"),   # more than 2x slower: the fastest after all
    (40.0, 0.0, "gpu"),   # planned entirely off the Neural Engine: no saving to be had
    (40.0, None, "ane"),  # no plan before macOS 14.4: taken on its name
])
def test_efficiency_takes_the_neural_engine_within_twice_the_fastest(ane_ms, share,
                                                                     expected):
    trials = [Trial("gpu", ms_per_tile=30.0), Trial("all", ms_per_tile=35.0),
              Trial("ane", ms_per_tile=ane_ms, neural_engine_share=share)]
    assert choose(lambda u: next(t for t in trials if t.units == u), ("gpu", "ane", "all"),
                  prefer="efficiency").units == expected
    assert choose(lambda u: next(t for t in trials if t.units == u),
                  ("gpu", "ane", "all"), prefer="speed").units == "gpu"


def test_preference_default_follows_the_battery(monkeypatch):
    from vs_coreml_esrgan.backends.coreml_units import resolve_preference

    monkeypatch.setattr(macos, "has_battery", lambda: True)
    assert resolve_preference(None) == "efficiency" and resolve_preference("speed") == "speed"
    monkeypatch.setattr(macos, "has_battery", lambda: False)
    assert resolve_preference("auto") == "speed"
    with pytest.raises(BackendError, match="prefer must be one of auto, speed, efficiency, "
                                           "got 'cool'"):
        resolve_preference("cool")


def test_choice_is_saved_per_model_macos_and_chip(mac, package):
    made = package()
    info = read_package(made)
    compiled = backend_module.compiled_model(made)
    run, calls = _timings({"ane": 20.0, "gpu": 30.0, "all": 25.0})
    said = []
    assert choose_compute_units(compiled, info, "pyobjc", notify=said.append,
                                run_trial=run) == "ane"
    assert calls == ["gpu", "ane", "all"] and said[-1].startswith("Core ML: ane chosen")
    again, calls_again = _timings({"ane": 99.0, "gpu": 1.0, "all": 1.0})
    assert choose_compute_units(compiled, info, "pyobjc", notify=said.append,
                                run_trial=again) == "ane"
    assert calls_again == [] and "measured earlier" in said[-1]
    mac.version("15.0")  # another macOS: measured anew
    assert choose_compute_units(compiled, info, "pyobjc", notify=said.append,
                                run_trial=again) == "gpu"
    # A float32 package never tries the Neural Engine.
    fp32 = package("fp32")
    run32, calls32 = _timings({"gpu": 3.0, "all": 2.0})
    assert choose_compute_units(backend_module.compiled_model(fp32), read_package(fp32),
                                "pyobjc", notify=said.append, run_trial=run32) == "all"
    assert calls32 == ["gpu", "all"]
    # An explicit unit reuses the verdict saved for 'auto' (same model, runtime, Mac).
    from vs_coreml_esrgan.backends.coreml_units import check_units

    mac.version("14.5")
    assert check_units(compiled, info, "pyobjc", "ane", notify=said.append,
                       run_trial=again).ms_per_tile == 20.0


def test_a_choice_being_measured_elsewhere_is_waited_for(mac, package):
    """Two processes starting on one model at once: the second waits for the first's
    lock instead of running trials beside it, then takes the saved choice."""
    import fcntl
    import threading

    made = package()
    compiled, info = backend_module.compiled_model(made), read_package(made)
    first_run, _ = _timings({"ane": 5.0, "gpu": 9.0, "all": 7.0})
    path = record_path(compiled, "pyobjc")
    path.parent.mkdir(parents=True, exist_ok=True)
    waiting = threading.Event()
    said: list[str] = []
    result: list[str] = []
    second_run, second_calls = _timings({"ane": 99.0, "gpu": 1.0, "all": 1.0})

    def notify(line: str) -> None:
        said.append(line)
        if "another process is measuring" in line:
            waiting.set()

    with open(path.with_name(f".{path.name}.lock"), "a+b") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as another process measuring would
        second = threading.Thread(target=lambda: result.append(choose_compute_units(
            compiled, info, "pyobjc", notify=notify, run_trial=second_run)))
        second.start()
        assert waiting.wait(60)
        assert result == [] and not path.exists()
        save_trials(path, {t.units: t for t in choose(first_run, ("gpu", "ane", "all")).trials})
        fcntl.flock(held, fcntl.LOCK_UN)
    second.join(60)
    assert result == ["ane"] and second_calls == []
    assert "measured earlier" in said[-1]


def test_trials_run_in_child_processes_and_survive_an_abort(mac, package, monkeypatch):
    """Real children: 'gpu' (MLComputeUnits 1) aborts, 'ane' (3) is slow, 'all' (2) wins;
    the user's process lives on and the backend runs on the chosen units."""
    made = package()
    info = read_package(made)
    compiled = backend_module.compiled_model(made)
    child_env(monkeypatch, FAKE_COREML_ABORT_UNITS="1", FAKE_COREML_DELAY_MS="3=300")
    crashed = trial_in_child(compiled, info, "pyobjc", "gpu")
    assert crashed.error == "crashed (SIGABRT)"
    said = []
    backend = backend_module.create_coreml_backend(made, notify=said.append)
    assert backend.compute_units == "all" and backend.runtime == "pyobjc"
    assert "Core ML: all chosen" in said[-1]
    assert "gpu (GPU) failed: crashed (SIGABRT)" in said[-1]
    saved = json.loads(next((Path(backend_module.cache_dir()) / "choices").glob("*.json"))
                       .read_text())
    ane = next(t for t in saved["trials"] if t["units"] == "ane")
    assert ane["ms_per_tile"] >= 300
    # Each unit passed the parity gate in its child: the doubles compute the executor's
    # program, so their answers equal the reference.
    assert ane["psnr"] is not None and ane["psnr"] > 60 and ane["rejected"] is None
    np.testing.assert_array_equal(backend(_tiles(info)), create_mil_backend(made)(
        _tiles(info)))


def test_a_child_that_fails_or_hangs_is_a_failed_trial(mac, package, monkeypatch):
    made = package()
    info = read_package(made)
    compiled = backend_module.compiled_model(made)
    child_env(monkeypatch, FAKE_COREML_FAIL_UNITS="3")
    failed = trial_in_child(compiled, info, "pyobjc", "ane")
    assert failed.error.startswith("BackendError: Core ML could not load") and \
        "ANECCompile() FAILED" in failed.error
    child_env(monkeypatch, FAKE_COREML_DELAY_MS="2=5000")
    slow = trial_in_child(compiled, info, "pyobjc", "all", timeout=3)
    assert slow.error == "no result within 3 s"


def test_the_child_finds_this_python_even_under_vspipe(monkeypatch):
    """Embedded in vspipe, sys.executable may be vspipe itself."""
    monkeypatch.setattr(sys, "executable", "/usr/local/bin/vspipe")
    found = python_executable()
    assert Path(found).name.startswith("python")
    version = subprocess.run([found, "-c", "import sys; print(sys.prefix)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert Path(version).resolve() == Path(sys.prefix).resolve()


def test_the_filter_on_a_mac_chooses_units_and_matches_the_executor(mac, package,
                                                                    monkeypatch, capfd):
    made = package()
    child_env(monkeypatch, FAKE_COREML_DELAY_MS="1=300,2=300")
    clip = clip_from_arrays(random_rgb(1, 20, 30, seed=5), vs.RGBS)
    coreml = frame_array(upscale(clip, made, overlap=2).get_frame(0))
    assert "Core ML: ane chosen" in capfd.readouterr().err
    executor = frame_array(upscale(clip, made, overlap=2, backend="mil").get_frame(0))
    np.testing.assert_array_equal(coreml, executor)


def test_macos_facts_off_a_mac(monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    assert macos.macos_version() is None and not macos.at_least((13, 0))
    assert macos.version_text() == "not macOS"
    assert macos.chip_name() == (platform.machine() or "unknown")


def test_doctor_on_a_mac_reports_units_parity_and_both_choices(mac, make_checkpoint,
                                                                monkeypatch, capsys):
    """gpu aborts, 'all' answers wrong values, ane is slow but within 2x of the CPU: every
    unit in a child, each row with its verdict; speed takes the CPU, efficiency ane."""
    import re

    from vs_coreml_esrgan.cli import main as cli

    checkpoint = make_checkpoint(compact(scale=2, num_conv=2))
    child_env(monkeypatch, FAKE_COREML_ABORT_UNITS="1", FAKE_COREML_WRONG_UNITS="2",
              FAKE_COREML_DELAY_MS="3=300,0=200")
    assert cli(["doctor", str(checkpoint), "--size", "40x30"]) == 0
    report = capsys.readouterr().out
    assert "| system | macOS 14.5 |" in report
    assert "- compute devices Core ML lists: CPU, GPU, Neural Engine" in report
    assert "| ane | Neural Engine | yes | the Neural Engine |" in report
    for runtime in ("pyobjc", "coremltools"):
        assert f"| {runtime} | gpu | - | - | failed: crashed (SIGABRT) |" in report
        assert re.search(rf"\| {runtime} \| all \| \d+\.\d \| \d+\.\d dB \| rejected: "
                         r"wrong output: PSNR", report)
        assert re.search(rf"\| {runtime} \| ane \| \d+\.\d \| identical \| pass \| "
                         r"Neural Engine 9\d %, CPU \d+ % \| none \|", report)
        assert re.search(rf"\| {runtime} \| cpu \| \d+\.\d \| identical \| pass \| "
                         r"CPU 100 % \| none \|", report)
        assert re.search(rf"- compute units 'auto', {runtime}, prefer speed \(the default on "
                         r"this Mac\): cpu, \d+\.\d ms/tile", report)
        assert re.search(rf"- compute units 'auto', {runtime}, prefer efficiency: ane, ",
                         report)
    # Without PyObjC's Quartz bindings (the doubles' default) plain buffers only.
    assert re.search(r"\| pyobjc \| cpu \| .* \| none \| plain \|", report)
    assert re.search(r"prefer speed \(the default on this Mac\): cpu, \d+\.\d ms/tile, "
                     r"plain buffers", report)
    assert "- backend 'auto' would run: Core ML (a unit passed the parity check)" in report
    assert "| Core ML pyobjc all | rejected: wrong output" in report
    assert "| torch MPS fp16 | failed: BackendError" in report  # no MPS on this machine


def test_doctor_on_a_mac_where_no_unit_passes(mac, make_checkpoint, monkeypatch, capsys):
    from vs_coreml_esrgan.cli import main as cli

    checkpoint = make_checkpoint(compact(scale=2, num_conv=2))
    child_env(monkeypatch, FAKE_COREML_ZERO_UNITS="0,1,2,3", FAKE_COREML_DEVICES="CPU")
    assert cli(["doctor", str(checkpoint), "--size", "40x30"]) == 0
    report = capsys.readouterr().out
    # A virtual machine: what its 'ane' and 'gpu' cases show is said plainly.
    assert ("| ane | Neural Engine | no (Neural Engine missing) | the CPU only: not a "
            "figure for Neural Engine |") in report
    assert "| all | GPU and Neural Engine | no (GPU, Neural Engine missing) |" in report
    assert "prefer speed (the default on this Mac): none (no unit passed)" in report
    assert ("- backend 'auto' would run: not Core ML (no unit passed); torch on the CPU "
            "(torch on MPS: failed: BackendError: PyTorch has no MPS device here") in report


def test_trial_entry_point_in_process(mac, package, capsys):
    """What each child runs: timings, the compute plan, non-finite output refused."""
    from vs_coreml_esrgan.backends import coreml_trial
    from vs_coreml_esrgan.backends.coreml_child import trial_request

    made = package()
    info = read_package(made)
    compiled = backend_module.compiled_model(made)
    request = trial_request(compiled, info, "pyobjc", "ane", None)
    assert coreml_trial.main([json.dumps(request)]) == 0
    result = Trial(**json.loads(capsys.readouterr().out))
    assert result.ran and result.units == "ane" and result.ms_per_tile > 0
    assert result.neural_engine_share > 0.5 and result.placement.startswith("Neural Engine")
    mac.version("14.2")  # no compute plan before 14.4: the trial still runs
    assert coreml_trial.main([json.dumps(request)]) == 0
    assert Trial(**json.loads(capsys.readouterr().out)).neural_engine_share is None
    mac.version("14.5")
    mac.plan.unplaced = ("conv",)
    broken = dict(request, compiled=str(compiled.parent / "gone.mlmodelc"))
    assert coreml_trial.main([json.dumps(broken)]) == 1
    assert "BackendError: Core ML could not load" in capsys.readouterr().err
    mac.plan.unplaced = ()


def test_a_setting_that_computes_nan_is_not_chosen(mac, make_checkpoint, tmp_path, capsys):
    import torch

    from vs_coreml_esrgan.backends import coreml_trial
    from vs_coreml_esrgan.backends.coreml_child import trial_request

    loaded = load_model(make_checkpoint(compact(scale=2, num_conv=2)))
    with torch.no_grad():
        loaded.network.body[0].bias.fill_(float("inf"))  # as an fp16 overflow would
    made = convert_model(loaded, tmp_path / "inf.mlpackage", tile=(16, 12))
    compiled = backend_module.compiled_model(made)
    request = trial_request(compiled, read_package(made), "pyobjc", "gpu", None)
    assert coreml_trial.main([json.dumps(request)]) == 1
    assert "non-finite output on compute units gpu" in capsys.readouterr().err


def test_inspect_shows_the_cost_weighted_plan(mac, package, capsys):
    from vs_coreml_esrgan.cli import main as cli

    made = package()
    assert cli(["inspect", str(made)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "device placement" in x)
    assert line.startswith("  device placement (ane): Neural Engine ")
    assert line.endswith(" of the estimated cost")
    mac.version("14.1")
    assert cli(["inspect", str(made), "--compute-units", "gpu"]) == 0
    assert ("device placement (gpu): not available: Core ML's compute plan needs macOS "
            "14.4 or later; this is macOS 14.1") in capsys.readouterr().out


def test_coremltools_pin():
    """compile_model takes a path string from 8.2 on (TypeError before); compute_plan
    appeared in 8.1 (coremltools' own sources at tags 8.0-8.2)."""
    import tomllib
    from importlib.metadata import version

    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    coreml = project["project"]["optional-dependencies"]["coreml"]
    assert "coremltools>=8.2" in coreml
    installed = tuple(int(part) for part in version("coremltools").split(".")[:2])
    assert installed >= (8, 2)


def test_cache_clear_forgets_choices_and_keeps_foreign_files(mac, package):
    from vs_coreml_esrgan import cache

    made = package()
    compiled = backend_module.compiled_model(made)
    run, _ = _timings({"ane": 1.0, "gpu": 2.0, "all": 3.0})
    choose_compute_units(compiled, read_package(made), "pyobjc", notify=lambda _: None,
                         run_trial=run)
    choices = Path(backend_module.cache_dir()) / "choices"
    (saved,) = choices.glob("*.json")
    (lock,) = choices.glob(".*.lock")
    foreign = choices / "notes.json"
    foreign.write_text("mine")
    listed = [path for path, _ in cache.entries()]
    assert saved in listed and lock not in listed and foreign not in listed
    assert cache.clear() == 2  # the compiled model and the choice (and the choice's lock)
    assert not saved.exists() and not lock.exists() and foreign.read_text() == "mine"


def test_runtime_auto_falls_back_to_coremltools(mac, package, monkeypatch):
    """PyObjC's Core ML fails to load (here on the CPU setting), coremltools works: the
    default runtime says so and carries on."""
    made = package()
    monkeypatch.setenv("FAKE_COREML_FAIL_UNITS", "0")
    said = []
    backend = backend_module.create_coreml_backend(made, compute_units="cpu",
                                                   notify=said.append)
    assert backend.runtime == "coremltools"
    assert any("PyObjC failed" in line and "ANECCompile" in line for line in said)


def test_units_auto_measures_through_coremltools_when_pyobjc_runs_nowhere(
        mac, package, monkeypatch):
    made = package()
    info = read_package(made)
    calls = []

    def fake_choose(compiled, info_, runtime, *, notify, prefer, reference,
                    run_trial=None, retry=None):
        calls.append(runtime)
        assert prefer == "speed" and reference.is_file()
        if runtime == "pyobjc":
            raise BackendError("Core ML could not run this model on any compute units")
        return "gpu"

    monkeypatch.setattr(backend_module, "choose_compute_units", fake_choose)
    said = []
    backend = backend_module.create_coreml_backend(made, notify=said.append, prefer="speed")
    assert calls == ["pyobjc", "coremltools"]
    assert backend.runtime == "coremltools" and backend.compute_units == "gpu"
    assert "ran correctly on no compute units" in said[0] and "trying coremltools" in said[0]
    np.testing.assert_allclose(backend(_tiles(info)), create_mil_backend(made)(
        _tiles(info)).astype(np.float32), atol=1e-3)


def test_failed_verdicts_expire_and_transient_ones_are_not_kept(mac, package, monkeypatch):
    """A Neural Engine compile that timed out is remembered (not tried on every run) for
    a week or until coremltools changes; a trial that could not start is forgotten."""
    from vs_coreml_esrgan.backends import coreml_records

    made = package()
    info = read_package(made)
    compiled = backend_module.compiled_model(made)
    said = []
    timed_out, calls = _timings({"ane": "no result within 600 s", "gpu": 30.0,
                                 "all": "could not start the trial: no python"})
    assert choose_compute_units(compiled, info, "pyobjc", notify=said.append,
                                run_trial=timed_out) == "gpu"
    assert calls == ["gpu", "ane", "all"]
    assert choose_compute_units(compiled, info, "pyobjc", notify=said.append,
                                run_trial=timed_out) == "gpu"
    assert calls == ["gpu", "ane", "all", "all"]  # only the transient one again
    week = coreml_records.FAILURE_DAYS * 86400
    real_time = time.time
    monkeypatch.setattr(coreml_records.time, "time", lambda: real_time() + week + 1)
    choose_compute_units(compiled, info, "pyobjc", notify=said.append, run_trial=timed_out)
    assert calls[-2:] == ["ane", "all"]  # expired: the Neural Engine is tried again
    monkeypatch.setattr(coreml_records.time, "time", real_time)
    monkeypatch.setattr(coreml_records, "coremltools_version", lambda: "99.0")
    choose_compute_units(compiled, info, "pyobjc", notify=said.append, run_trial=timed_out)
    assert calls[-2:] == ["ane", "all"]  # another coremltools: tried again
    path = record_path(compiled, "pyobjc")
    path.write_text("{damaged")
    choose_compute_units(compiled, info, "pyobjc", notify=said.append, run_trial=timed_out)
    assert calls[-3:] == ["gpu", "ane", "all"]  # a damaged record: measured again


def test_no_neural_engine_listed_skips_its_trial(mac, package, monkeypatch):
    """A virtual machine or an Intel Mac: Core ML lists no Neural Engine (macOS 14+)."""
    from vs_coreml_esrgan.backends.coreml_devices import compute_devices

    made = package()
    info = read_package(made)
    compiled = backend_module.compiled_model(made)
    assert compute_devices() == ("CPU", "GPU", "Neural Engine")
    monkeypatch.setenv("FAKE_COREML_DEVICES", "CPU")
    assert compute_devices() == ("CPU",)
    run, calls = _timings({"gpu": 30.0, "all": 20.0})
    said = []
    assert choose_compute_units(compiled, info, "pyobjc", notify=said.append,
                                run_trial=run) == "all"
    assert calls == ["gpu", "all"]
    assert "ane (Neural Engine) failed: skipped: Core ML lists no Neural Engine" in said[-1]
    # asked for by name: refused, not run on the CPU under the Neural Engine's name
    with pytest.raises(BackendError, match=r"compute_units 'ane': Core ML lists no Neural "
                                           r"Engine on this Mac .* use compute_units 'auto'"):
        backend_module.create_coreml_backend(made, compute_units="ane")
    mac.version("13.6")  # no MLAllComputeDevices before macOS 14: tried anyway
    assert compute_devices() is None


def test_the_trial_error_is_found_among_later_log_lines(mac, package, monkeypatch):
    """Core ML and Metal may write to stderr after the child's own error line."""
    made = package()
    info = read_package(made)
    compiled = backend_module.compiled_model(made)
    noisy = ("import atexit, sys; atexit.register(lambda: print('E5RT: noise', "
             "file=sys.stderr)); from vs_coreml_esrgan.backends.coreml_trial import main; "
             "sys.exit(main())")
    real_run = subprocess.run

    def run(command, **kwargs):
        return real_run([command[0], "-c", noisy, *command[3:]], **kwargs)

    monkeypatch.setattr(subprocess, "run", run)
    child_env(monkeypatch, FAKE_COREML_FAIL_UNITS="3")
    failed = trial_in_child(compiled, info, "pyobjc", "ane")
    assert failed.error.startswith("BackendError: Core ML could not load")
