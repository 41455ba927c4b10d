"""Where Core ML plans to run a compiled program: each device's share of the estimated cost.

Core ML's compute plan (``MLComputePlan``, macOS 14.4+) names a preferred device per
operation and estimates each operation's share of the whole program's cost. Counting
operations would weigh an ``add`` like a 3x3 convolution; the cost weights do not.
Checked against coremltools 9.0 (models/compute_plan.py, models/compute_device.py,
coremlpython/CoreMLPython.mm): ``MLComputePlan.load_from_path(path, compute_units)``;
``get_compute_device_usage_for_mlprogram_operation`` and
``get_estimated_cost_for_mlprogram_operation`` may return None; the device classes are
``MLCPUComputeDevice``, ``MLGPUComputeDevice`` and ``MLNeuralEngineComputeDevice``; before
macOS 14.4 the native side raises RuntimeError ("MLComputePlan is only available on
macOS >= 14.4").
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass

from ..coreml.package import import_coremltools
from . import BackendError, macos

# This project's compute-unit settings and coremltools' ComputeUnit names for them.
COMPUTE_UNITS = {"ane": "CPU_AND_NE", "gpu": "CPU_AND_GPU", "cpu": "CPU_ONLY", "all": "ALL"}
PLAN_MACOS = (14, 4)
_DEVICES = {"MLCPUComputeDevice": "CPU", "MLGPUComputeDevice": "GPU",
            "MLNeuralEngineComputeDevice": "Neural Engine"}
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Placement:
    """``shares``: device name ('CPU', 'GPU', 'Neural Engine', 'unknown') -> fraction of
    the program's estimated cost (fractions add up to 1; by operation count when Core ML
    gives no cost estimates, then ``weighted`` is False). ``operations``: device -> count
    of non-const operations."""

    shares: dict[str, float]
    operations: dict[str, int]
    weighted: bool

    def share(self, device: str) -> float:
        return self.shares.get(device, 0.0)

    def describe(self) -> str:
        """'Neural Engine 93 %, CPU 7 %' (largest first)."""
        basis = "" if self.weighted else " (by operation count: no cost estimates)"
        return ", ".join(f"{device} {share:.0%}".replace("%", " %") for device, share in
                         sorted(self.shares.items(), key=lambda kv: -kv[1])) + basis


def share_of_cost(devices: list[str], weights: list[float | None]) -> Placement:
    """The placement of operations on ``devices`` with estimated ``weights`` (None where
    Core ML gave none). Weighted by cost when any weight is known; an operation without
    a weight then counts as zero cost."""
    operations = dict(Counter(devices))
    known = [w for w in weights if w is not None]
    weighted = bool(known) and sum(known) > 0
    totals: Counter[str] = Counter()
    for device, weight in zip(devices, weights, strict=True):
        totals[device] += (weight or 0.0) if weighted else 1.0
    whole = sum(totals.values())
    shares = {device: value / whole for device, value in totals.items()} if whole else {}
    return Placement(shares=shares, operations=operations, weighted=weighted)


def operator_type(name: str) -> str:
    """'conv' for 'ios17.conv': the plan names operations with their opset's prefix."""
    return name.rsplit(".", 1)[-1]


def placement(compiled: str | os.PathLike[str], units: str) -> Placement:
    """Core ML's plan for a compiled ``.mlmodelc`` on ``units`` ('ane', 'gpu', 'cpu',
    'all'). Raises BackendError before macOS 14.4 and when Core ML cannot make a plan."""
    macos.require(PLAN_MACOS, "Core ML's compute plan")
    ct = import_coremltools()
    try:
        from coremltools.models.compute_plan import MLComputePlan

        plan = MLComputePlan.load_from_path(
            path=os.fspath(compiled), compute_units=getattr(ct.ComputeUnit,
                                                            COMPUTE_UNITS[units]))
        program = plan.model_structure.program
        if program is None:
            raise BackendError(f"{compiled}: not an ML Program")
        devices, weights = [], []
        for operation in program.functions["main"].block.operations:
            if operator_type(operation.operator_name) == "const":
                continue
            usage = plan.get_compute_device_usage_for_mlprogram_operation(operation)
            preferred = getattr(usage, "preferred_compute_device", None)
            devices.append(_DEVICES.get(type(preferred).__name__, UNKNOWN)
                           if preferred is not None else UNKNOWN)
            cost = plan.get_estimated_cost_for_mlprogram_operation(operation)
            weights.append(None if cost is None else float(cost.weight))
    except BackendError:
        raise
    except Exception as exc:  # RuntimeError from Core ML; ValueError without its library
        raise BackendError(f"Core ML's compute plan for {os.fspath(compiled)} on {units} "
                           f"failed: {exc}") from None
    return share_of_cost(devices, weights)
