"""The Mac of the tests that run the macOS-only code here: PyObjC's Core ML and
coremltools' native parts replaced by the doubles in tests/fakes (see the README there),
in this process and in the trial children."""

from __future__ import annotations

import importlib.util
import platform
import sys
from pathlib import Path

import pytest
from conftest import compact

from vs_coreml_esrgan.checkpoint import load_model
from vs_coreml_esrgan.coreml.convert import convert_model

FAKES = Path(__file__).parent / "fakes"


def _load_fake(name: str):
    spec = importlib.util.spec_from_file_location(name, FAKES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


LIES = ("FAKE_COREML_ABORT_UNITS", "FAKE_COREML_FAIL_UNITS", "FAKE_COREML_DELAY_MS",
        "FAKE_COREML_DECLINE_BACKING", "FAKE_COREML_WRONG_UNITS", "FAKE_COREML_ZERO_UNITS",
        "FAKE_COREML_KILL_PREDICT_UNITS", "FAKE_COREML_DEVICES", "FAKE_COREML_LOAD_DELAY_MS",
        "FAKE_COREML_ANE_MAX_PIXELS", "FAKE_COREML_SURFACE_DELAY_MS")


@pytest.fixture
def mac(monkeypatch, tmp_path):
    """This process as a Mac with macOS 14.5 (``mac.version`` changes it), PyObjC's Core ML
    bindings and coremltools' native parts replaced by the doubles, an empty cache; child
    processes (the trials) are Macs of the same kind (tests/fakes/sitecustomize.py)."""
    for name in ("objc", "Foundation", "CoreML", "Quartz", "_lies", "coremltools_doubles"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.syspath_prepend(str(FAKES))
    doubles = _load_fake("coremltools_doubles")
    fakes = {name: _load_fake(name) for name in ("objc", "Foundation", "CoreML")}
    import coremltools as ct
    import coremltools.models.compute_plan as compute_plan

    monkeypatch.setattr(sys, "platform", "darwin")
    state = {"version": "14.5"}
    monkeypatch.setattr(platform, "mac_ver", lambda: (state["version"], ("", "", ""), "arm64"))
    monkeypatch.setattr(ct.models.utils, "compile_model", doubles.compile_model)
    monkeypatch.setattr(ct.models, "CompiledMLModel", doubles.CompiledMLModel)
    monkeypatch.setattr(doubles.CompiledMLModel, "failures", {})
    monkeypatch.setattr(compute_plan, "MLComputePlan", doubles.MLComputePlan)
    monkeypatch.setenv("VS_COREML_ESRGAN_CACHE", str(tmp_path / "cache"))
    for variable in LIES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.delenv("FAKE_COREVIDEO", raising=False)
    child_env(monkeypatch, FAKE_MACOS="14.5")

    class Mac:
        CoreML = fakes["CoreML"]
        Quartz = None
        plan = doubles.MLComputePlan
        compiled_model = doubles.CompiledMLModel

        @classmethod
        def surfaces(cls) -> None:
            """PyObjC's Quartz (CoreVideo) bindings present, here and in the children:
            the trials then time IOSurface-backed buffers too (absent by default, so that
            no other test's outcome depends on which buffers the timing favours)."""
            monkeypatch.setenv("FAKE_COREVIDEO", "1")
            cls.Quartz = _load_fake("Quartz")

        @staticmethod
        def version(text: str) -> None:
            state["version"] = text
            monkeypatch.setenv("FAKE_MACOS", text)

    return Mac


@pytest.fixture
def package(make_checkpoint, tmp_path):
    def make(precision: str = "fp16", batch: int = 1, **spec) -> Path:
        loaded = load_model(make_checkpoint(compact(**{"scale": 2, "num_conv": 2, **spec})))
        made = len(list(tmp_path.glob("m-*.mlpackage")))
        return convert_model(loaded, tmp_path / f"m-{precision}-{batch}-{made}.mlpackage",
                             tile=(16, 12), batch=batch, precision=precision)
    return make


def child_env(monkeypatch, **variables):
    root = Path(__file__).parent.parent
    monkeypatch.setenv("PYTHONPATH", f"{FAKES}:{root}")
    for key, value in variables.items():
        monkeypatch.setenv(key, value)
