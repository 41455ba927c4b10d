"""Test doubles of coremltools 9.0's macOS-only pieces (see README.md beside this file):
``compile_model``, ``CompiledMLModel`` and ``MLComputePlan``."""

from __future__ import annotations

import json
import os
import shutil
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _lies
import coremltools as ct
import numpy as np

from vs_coreml_esrgan.coreml.mil import MilProgram
from vs_coreml_esrgan.coreml.package import load_spec


def compile_model(model: Any, destination_path: str | None = None) -> str:
    if not isinstance(model, str) or not model.rstrip("/").endswith((".mlpackage",
                                                                     ".mlmodel")):
        raise ValueError(f"Invalid model file path: '{model}'.")
    if destination_path is not None and not destination_path.rstrip("/").endswith(
            ".mlmodelc"):
        raise Exception('"destination_path" parameter must have ".mlmodelc" file extension.')
    _lay_out_compiled(Path(model), Path(destination_path))
    return destination_path


# Where the doubles keep the source package inside a compiled model (a real .mlmodelc has
# no such folder: it lets the doubles compute what the program computes).
_SOURCE = ".double/model.mlpackage"


def _lay_out_compiled(package: Path, destination: Path) -> None:
    """A directory laid out as ``xcrun coremlcompiler`` lays out an ML Program's
    ``.mlmodelc``: ``coremldata.bin`` (the model description, protobuf), ``model.mil``
    (the program as text), ``weights/weight.bin``, ``metadata.json``,
    ``analytics/coremldata.bin``; no Manifest.json, no Data/ folder, so code that reads
    it as a package fails as it would on a Mac."""
    data = package / "Data" / "com.apple.CoreML"
    (destination / "weights").mkdir(parents=True)
    (destination / "analytics").mkdir()
    spec = load_spec(package)
    (destination / "coremldata.bin").write_bytes(spec.description.SerializeToString())
    function = spec.mlProgram.functions["main"]
    ops = function.block_specializations[function.opset].operations
    (destination / "model.mil").write_text(
        "program(1.0)\n{\n  func main<" + function.opset + ">(...) {\n"
        + "".join(f"    {op.type}(...);\n" for op in ops) + "  }\n}\n")
    shutil.copyfile(data / "weights" / "weight.bin", destination / "weights" / "weight.bin")
    (destination / "metadata.json").write_text(json.dumps([{
        "metadataOutputVersion": "3.0", "specificationVersion": spec.specificationVersion,
        "modelType": {"name": "MLModelType_mlProgram"}}]))
    (destination / "analytics" / "coremldata.bin").write_bytes(b"")
    shutil.copytree(package, destination / _SOURCE)


def source_package(compiled: str) -> str:
    """The package a compiled model was made from (see ``_SOURCE``)."""
    source = Path(compiled) / _SOURCE
    if not source.is_dir():
        raise RuntimeError(f"{compiled} is not a compiled model made by compile_model")
    return str(source)


class CompiledMLModel:
    # "load:UNITS" or "predict:UNITS" (a ComputeUnit name) -> the RuntimeError to raise
    failures: typing.ClassVar[dict[str, str]] = {}

    def __init__(self, path: str, compute_units: Any = ct.ComputeUnit.ALL, **_: Any) -> None:
        if not isinstance(path, str):
            raise TypeError('The "path" parameter must be of type "str".')
        if not isinstance(compute_units, ct.ComputeUnit):
            raise TypeError('The "compute_units" parameter must be of type: '
                            '"coremltools.ComputeUnit".')
        if self.failures.get(f"load:{compute_units.name}"):
            raise RuntimeError(self.failures[f"load:{compute_units.name}"])
        self.compute_unit = compute_units
        self._units = _lies.COREMLTOOLS_UNITS[compute_units.name]
        self._kill = _lies.on_load(self._units)
        self._program = MilProgram.load(source_package(path))
        if _lies.compile_rejected(self._units, self._program.info.input_shape):
            raise RuntimeError("Error compiling model: ANECCompile() FAILED")

    def predict(self, data: dict) -> dict:
        failure = self.failures.get(f"predict:{self.compute_unit.name}")
        if failure:
            raise RuntimeError(failure)
        _lies.on_predict(self._kill)
        time.sleep(_lies.delay_s("FAKE_COREML_DELAY_MS", self._units))
        info = self._program.info
        # coremltools hands float16 inputs to Core ML as float32 copies and answers float32.
        feed = np.asarray(data[info.input_name], dtype=np.float32)
        result = self._program(feed.astype(info.input_dtype))
        return {info.output_name: _lies.answer(self._units, result).astype(np.float32)}


class MLCPUComputeDevice:
    pass


class MLGPUComputeDevice:
    pass


class MLNeuralEngineComputeDevice:
    pass


@dataclass(frozen=True)
class _Operation:
    operator_name: str


@dataclass(frozen=True)
class _Usage:
    preferred_compute_device: Any
    supported_compute_devices: list = field(default_factory=list)


@dataclass(frozen=True)
class _Cost:
    weight: float


class MLComputePlan:
    """Places 'conv' on the Neural Engine when the units allow it (else the GPU, else the
    CPU) and everything else on the CPU, with conv costing ``conv_weight`` times an
    other op; a small program (fewer than ``small_program_convs`` convolutions) entirely
    on the CPU, as Core ML is seen to do. Operation names carry the opset's prefix
    ('ios17.conv'; whether const has one is not known, so it gets one too).
    ``unplaced`` op types get no device usage, ``uncosted`` no cost."""

    conv_weight = 9.0
    small_program_convs = 4
    unplaced: tuple[str, ...] = ()
    uncosted: tuple[str, ...] = ()
    no_neural_engine = False

    def __init__(self, path: str, units: Any) -> None:
        function = load_spec(source_package(path)).mlProgram.functions["main"]
        ops = function.block_specializations[function.opset].operations
        prefix = _opset_prefix(function.opset)
        self._operations = [_Operation(f"{prefix}.{op.type}") for op in ops]
        self._units = units
        types = [_type(o) for o in self._operations]
        self._small = types.count("conv") < self.small_program_convs
        self._total = sum(self.conv_weight if t == "conv" else 1.0
                          for t in types if t != "const")

    @classmethod
    def load_from_path(cls, path: str, compute_units: Any = ct.ComputeUnit.ALL
                       ) -> MLComputePlan:
        if not os.path.isdir(path):
            raise RuntimeError(f"Failed to load the compute plan of {path}")
        return cls(path, compute_units)

    @property
    def model_structure(self) -> Any:
        block = type("Block", (), {"operations": self._operations})()
        function = type("Function", (), {"block": block})()
        program = type("Program", (), {"functions": {"main": function}})()
        return type("Structure", (), {"program": program})()

    def get_compute_device_usage_for_mlprogram_operation(self, operation: _Operation
                                                         ) -> _Usage | None:
        kind = _type(operation)
        if kind in self.unplaced:
            return None
        units = self._units.name
        if kind != "conv" or self._small:
            return _Usage(MLCPUComputeDevice())
        if not self.no_neural_engine and units in ("CPU_AND_NE", "ALL"):
            return _Usage(MLNeuralEngineComputeDevice())
        if units in ("CPU_AND_GPU", "ALL"):
            return _Usage(MLGPUComputeDevice())
        return _Usage(MLCPUComputeDevice())

    def get_estimated_cost_for_mlprogram_operation(self, operation: _Operation
                                                   ) -> _Cost | None:
        if _type(operation) in self.uncosted:
            return None
        weight = self.conv_weight if _type(operation) == "conv" else 1.0
        return _Cost(weight / self._total)


def _opset_prefix(opset: str) -> str:
    """'CoreML7' (the package's opset) -> 'ios17', as the plan names operations."""
    digits = "".join(c for c in opset if c.isdigit())
    return f"ios{10 + int(digits)}" if digits else opset


def _type(operation: _Operation) -> str:
    return operation.operator_name.rsplit(".", 1)[-1]
