"""Test doubles of coremltools 9.0's macOS-only pieces (see README.md beside this file):
``compile_model``, ``CompiledMLModel`` and ``MLComputePlan``."""

from __future__ import annotations

import os
import shutil
import typing
from dataclasses import dataclass, field
from typing import Any

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
    shutil.copytree(model, destination_path)
    return destination_path


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
        self._program = MilProgram.load(path)

    def predict(self, data: dict) -> dict:
        failure = self.failures.get(f"predict:{self.compute_unit.name}")
        if failure:
            raise RuntimeError(failure)
        info = self._program.info
        # coremltools hands float16 inputs to Core ML as float32 copies and answers float32.
        feed = np.asarray(data[info.input_name], dtype=np.float32)
        return {info.output_name: self._program(feed.astype(info.input_dtype)).astype(
            np.float32)}


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
    other op. ``unplaced`` op types get no device usage, ``uncosted`` no cost."""

    conv_weight = 9.0
    unplaced: tuple[str, ...] = ()
    uncosted: tuple[str, ...] = ()
    no_neural_engine = False

    def __init__(self, path: str, units: Any) -> None:
        function = load_spec(path).mlProgram.functions["main"]
        ops = function.block_specializations[function.opset].operations
        self._operations = [_Operation(op.type) for op in ops]
        self._units = units
        total = sum(self.conv_weight if o.operator_name == "conv" else 1.0
                    for o in self._operations if o.operator_name != "const")
        self._total = total

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
        if operation.operator_name in self.unplaced:
            return None
        units = self._units.name
        if operation.operator_name == "conv" and not self.no_neural_engine \
                and units in ("CPU_AND_NE", "ALL"):
            return _Usage(MLNeuralEngineComputeDevice())
        if operation.operator_name == "conv" and units in ("CPU_AND_GPU", "ALL"):
            return _Usage(MLGPUComputeDevice())
        return _Usage(MLCPUComputeDevice())

    def get_estimated_cost_for_mlprogram_operation(self, operation: _Operation
                                                   ) -> _Cost | None:
        if operation.operator_name in self.uncosted:
            return None
        weight = self.conv_weight if operation.operator_name == "conv" else 1.0
        return _Cost(weight / self._total)
