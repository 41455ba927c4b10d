"""Core ML through PyObjC (``pyobjc-framework-CoreML``), macOS only.

Why not only coremltools: ``CompiledMLModel.predict`` holds the GIL for the whole
prediction (so the tiling engine cannot cut and stitch other tiles meanwhile) and copies
float16 inputs to float32 and back. Here the tiles are handed to Core ML as
``MLMultiArray``s over page-aligned numpy buffers, the output is written straight into a
numpy array through ``MLPredictionOptions.outputBackings``, and PyObjC releases the GIL
while Core ML runs.

Checked against (see also the test doubles in tests/fakes/, built from the same sources):
- PyObjC's CoreML metadata (pyobjc-framework-CoreML/Lib/CoreML/_metadata.py):
  ``initWithDataPointer:shape:dataType:strides:deallocator:error:`` takes its pointer as
  ``n^v`` of variable length, which pyobjc-core (objc_util.m, PyObjC_PythonToCArray)
  passes as the buffer's own address (``PyBUF_CONTIG_RO``, no copy); every ``error:``
  argument is an ``o`` output, so the call returns ``(object, error)``; the
  MLMultiArrayDataType and MLComputeUnits values (Float16 = 0x10010, Float32 = 0x10020;
  CPUOnly 0, CPUAndGPU 1, All 2, CPUAndNeuralEngine 3) are module constants that exist
  whatever the macOS, so availability is checked against the macOS version instead.
- pyobjc-core's OC_PythonDictionary.m: a Python dict handed to Objective-C is a proxy
  whose every access takes the GIL; feeds and backings are real ``NSDictionary``s here.
- Apple's MLMultiArray documentation: page-aligned data pointers for the best
  performance. (IOSurface-backed ``CVPixelBuffer`` arrays would let the Neural Engine read
  without a copy, but only for 2-D float16 planes of a pixel format; our tensors are
  ``(batch, 3, H, W)``, so they are not used.)
"""

from __future__ import annotations

import importlib
import mmap
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import BackendError, macos

# MLComputeUnits constant names per compute-unit setting of this project.
_COMPUTE_UNITS = {"ane": "MLComputeUnitsCPUAndNeuralEngine",
                  "gpu": "MLComputeUnitsCPUAndGPU", "cpu": "MLComputeUnitsCPUOnly",
                  "all": "MLComputeUnitsAll"}
# MLMultiArrayDataType values (CoreML/MLMultiArray.h: 0x10000 | bits for floats).
_DATA_TYPES = {np.dtype(np.float16): 0x10000 | 16, np.dtype(np.float32): 0x10000 | 32}


def pyobjc_available() -> bool:
    """True when PyObjC's Core ML bindings can be imported (macOS with the package)."""
    try:
        importlib.import_module("CoreML")
    except ImportError:
        return False
    return True


def aligned_empty(shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on a page boundary."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(size + mmap.PAGESIZE, np.uint8)
    offset = -raw.ctypes.data % mmap.PAGESIZE
    return raw[offset:offset + size].view(dtype).reshape(shape)


def element_strides(shape: tuple[int, ...]) -> list[int]:
    """C-order strides in elements for ``shape``. Taken from the shape, not from numpy:
    numpy gives a length-1 axis any stride (0 for ``a[None]``) and still calls the array
    contiguous, and Core ML would read that stride."""
    strides, step = [], 1
    for length in reversed(shape):
        strides.append(step)
        step *= length
    return strides[::-1]


@dataclass(frozen=True)
class PyObjCPredictor:
    """One loaded ``MLModel``; ``predict`` maps an input array of the model's shape and
    dtype to a new output array of its output shape and dtype."""

    model: Any  # CoreML.MLModel
    input_name: str
    output_name: str
    output_shape: tuple[int, ...]
    output_dtype: np.dtype

    def predict(self, feed: np.ndarray) -> np.ndarray:
        """Run one prediction. Raises BackendError with Core ML's message on failure."""
        import CoreML
        import Foundation
        import objc

        source = aligned_empty(feed.shape, feed.dtype)
        np.copyto(source, feed)
        out = aligned_empty(self.output_shape, self.output_dtype)
        # Objective-C objects made on a worker thread go to this pool, which drains here,
        # rather than to one that never does.
        with objc.autorelease_pool():
            backing = _wrap(out)
            provider = checked(
                CoreML.MLDictionaryFeatureProvider.alloc().initWithDictionary_error_(
                    ns_dictionary(Foundation, self.input_name,
                                   CoreML.MLFeatureValue.featureValueWithMultiArray_(
                                       _wrap(source))), None),
                "Core ML rejected the input")
            options = CoreML.MLPredictionOptions.alloc().init()
            options.setOutputBackings_(ns_dictionary(Foundation, self.output_name, backing))
            result = checked(self.model.predictionFromFeatures_options_error_(
                provider, options, None), "Core ML prediction failed")
            produced = result.featureValueForName_(self.output_name).multiArrayValue()
            # Core ML may decline a backing and allocate its own array (Apple: "The
            # framework may not use the specified backing object"); identity tells.
            if objc.pyobjc_id(produced) != objc.pyobjc_id(backing):
                copy_declined(produced, backing, out)
        return out


def copy_declined(produced: Any, backing: Any, out: np.ndarray) -> None:
    """Copy the array Core ML allocated itself into ``out`` (the declined ``backing``).

    macOS 15 has ``transferToMultiArray:`` (honours strides, casts the type); before it,
    ``getBytesWithHandler:`` (macOS 12.3+; PyObjC's metadata hands the block its bytes,
    ``n^v`` with the length in the next argument, called synchronously) read with the
    array's own strides and data type.
    """
    if macos.at_least((15, 0)):
        produced.transferToMultiArray_(backing)
        return
    types = {code: dtype for dtype, code in _DATA_TYPES.items()}
    dtype = types.get(int(produced.dataType()))
    shape = tuple(int(n) for n in produced.shape())
    if dtype is None or shape != out.shape:
        raise BackendError(f"Core ML answered a {produced.dataType():#x} array of shape "
                           f"{shape}, expected {out.dtype} {out.shape}")
    strides = [int(n) * dtype.itemsize for n in produced.strides()]

    def read(data: bytes, size: int) -> None:
        flat = np.frombuffer(data, np.uint8, count=size).view(dtype)
        np.copyto(out, np.lib.stride_tricks.as_strided(flat, shape, strides),
                  casting="unsafe")

    produced.getBytesWithHandler_(read)


def load_pyobjc_predictor(compiled: str | os.PathLike[str], compute_units: str, *,
                          input_name: str, output_name: str,
                          output_shape: tuple[int, ...], output_dtype: np.dtype
                          ) -> PyObjCPredictor:
    """Load a compiled ``.mlmodelc`` on ``compute_units`` ('ane', 'gpu', 'cpu', 'all').

    Raises BackendError when PyObjC's Core ML bindings are missing, the compute-unit
    setting is unknown, the model cannot be loaded, or ``output_dtype`` is not
    float16/float32.
    """
    try:
        CoreML = importlib.import_module("CoreML")
        Foundation = importlib.import_module("Foundation")
    except ImportError:
        raise BackendError("runtime 'pyobjc' needs PyObjC's Core ML bindings: pip install "
                           "pyobjc-framework-CoreML (or use runtime 'coremltools')") from None
    if np.dtype(output_dtype) not in _DATA_TYPES:
        raise BackendError(f"expected a float16 or float32 output, got {output_dtype}")
    if compute_units not in _COMPUTE_UNITS:
        raise BackendError(f"compute units must be one of {', '.join(_COMPUTE_UNITS)}, got "
                           f"{compute_units!r}")
    configuration = CoreML.MLModelConfiguration.alloc().init()
    configuration.setComputeUnits_(getattr(CoreML, _COMPUTE_UNITS[compute_units]))
    url = Foundation.NSURL.fileURLWithPath_(os.fspath(compiled))
    model = checked(CoreML.MLModel.modelWithContentsOfURL_configuration_error_(
        url, configuration, None), f"Core ML could not load {os.fspath(compiled)}")
    return PyObjCPredictor(model=model, input_name=input_name, output_name=output_name,
                           output_shape=tuple(output_shape),
                           output_dtype=np.dtype(output_dtype))


def _wrap(array: np.ndarray) -> Any:
    """An MLMultiArray over ``array``'s own memory (C-contiguous float16/float32). The
    caller keeps ``array`` alive for as long as Core ML may touch the result (no
    deallocator: the memory is numpy's)."""
    import CoreML

    if not array.flags.c_contiguous or not array.flags.writeable:
        raise ValueError("expected a C-contiguous, writeable array")
    return checked(
        CoreML.MLMultiArray.alloc()
        .initWithDataPointer_shape_dataType_strides_deallocator_error_(
            memoryview(array).cast("B"), list(array.shape), _DATA_TYPES[array.dtype],
            element_strides(array.shape), None, None),
        f"Core ML could not wrap a {array.dtype} array of shape {array.shape}")


def ns_dictionary(Foundation: Any, key: str, value: Any) -> Any:
    """A one-entry ``NSDictionary`` with a real ``NSString`` key (not a Python proxy)."""
    return Foundation.NSDictionary.dictionaryWithObject_forKey_(
        value, Foundation.NSString.stringWithString_(key).nsstring())


def checked(answer: tuple[Any, Any], failure: str) -> Any:
    """The object of an Objective-C ``(object, NSError)`` answer; BackendError with
    ``failure`` and the error's text when the object is nil."""
    value, error = answer
    if value is None:
        detail = error.localizedDescription() if hasattr(error, "localizedDescription") \
            else error
        raise BackendError(f"{failure}: {detail}")
    return value
