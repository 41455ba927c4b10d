"""The compute devices Core ML can use on this Mac (macOS 14+), for skipping a Neural
Engine trial where there is none (Intel Macs, virtual machines such as GitHub's macOS
runners) and for the doctor's report.

Sources: Apple's CoreML/MLAllComputeDevices.h (``MLAllComputeDevices()``, macOS 14.0+:
"an array containing all compute devices", ``MLCPUComputeDevice``, ``MLGPUComputeDevice``,
``MLNeuralEngineComputeDevice``); PyObjC binds it as ``CoreML.MLAllComputeDevices``
(pyobjc-framework-CoreML PyObjCTest/test_mlallcomputedevices.py, min_os_level 14.0);
coremltools 8.1+ as ``coremltools.models.compute_device.MLComputeDevice
.get_all_compute_devices()`` (models/compute_device.py), whose instances are of classes
with the same names. A listing, not a computation: asked in this process.
"""

from __future__ import annotations

import importlib

from . import macos

DEVICES_MACOS = (14, 0)
_NAMES = {"MLCPUComputeDevice": "CPU", "MLGPUComputeDevice": "GPU",
          "MLNeuralEngineComputeDevice": "Neural Engine"}


def compute_devices() -> tuple[str, ...] | None:
    """'CPU', 'GPU', 'Neural Engine' as Core ML lists them; None where it cannot say
    (before macOS 14, off macOS, neither PyObjC's Core ML nor coremltools' native part)."""
    if not macos.at_least(DEVICES_MACOS):
        return None
    try:
        CoreML = importlib.import_module("CoreML")
        listed = CoreML.MLAllComputeDevices()
        return tuple(_pyobjc_name(CoreML, device) for device in listed)
    except Exception:  # no PyObjC, or it lacks the function: ask coremltools
        pass
    try:
        from coremltools.models.compute_device import MLComputeDevice

        listed = MLComputeDevice.get_all_compute_devices()
        return tuple(_NAMES.get(type(device).__name__, type(device).__name__)
                     for device in listed)
    except Exception:  # no native library (AttributeError on None), or too old
        return None


def _pyobjc_name(CoreML: object, device: object) -> str:
    for class_name, name in _NAMES.items():
        kind = getattr(CoreML, class_name, None)
        if kind is not None and device.isKindOfClass_(kind):
            return name
    return type(device).__name__


def neural_engine_present() -> bool | None:
    """Whether Core ML lists a Neural Engine; None when it cannot say."""
    devices = compute_devices()
    return None if devices is None else "Neural Engine" in devices


# The device each compute-unit setting is for (besides the CPU, which all of them may use).
UNIT_DEVICES = {"ane": "Neural Engine", "gpu": "GPU", "all": "GPU and Neural Engine",
                "cpu": "CPU"}


def unit_devices_table(devices: tuple[str, ...] | None) -> list[str]:
    """A markdown table: per compute-unit setting, whether its device is present, and so
    what a result on it shows. Where the device is missing (a virtual machine such as
    GitHub's macOS runners has no Neural Engine and no GPU for Core ML) the setting runs
    on the CPU, and its figures must not be read as the device's."""
    rows = ["| units | for | present here | a result on it shows |", "|---|---|---|---|"]
    for units, wanted in UNIT_DEVICES.items():
        if devices is None:
            present, meaning = "unknown (Core ML lists devices from macOS 14)", \
                "unknown: check the compute plan's shares"
        else:
            missing = [d for d in wanted.split(" and ") if d not in devices]
            present = "yes" if not missing else f"no ({', '.join(missing)} missing)"
            meaning = (f"the {wanted}" if not missing else
                       "the CPU only: not a figure for " + ", ".join(missing))
        rows.append(f"| {units} | {wanted} | {present} | {meaning} |")
    return rows
