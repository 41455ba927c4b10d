"""Core ML through PyObjC (``pyobjc-framework-CoreML``), macOS only.

Why not only coremltools: ``CompiledMLModel.predict`` holds the GIL for the whole
prediction (so the tiling engine cannot cut and stitch other tiles meanwhile) and copies
float16 inputs to float32 and back. Here the numpy buffers themselves are wrapped as
``MLMultiArray`` (no copy), the output is written straight into a numpy array through
``MLPredictionOptions.outputBackings``, and PyObjC releases the GIL while Core ML runs.

Written against Apple's and PyObjC's documentation; it is exercised by the macOS tests
(tests marked "needs macOS"), which compare it with the coremltools path.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import BackendError

# MLComputeUnits names per compute-unit setting of this project.
_COMPUTE_UNITS = {"ane": "MLComputeUnitsCPUAndNeuralEngine",
                  "gpu": "MLComputeUnitsCPUAndGPU", "cpu": "MLComputeUnitsCPUOnly",
                  "all": "MLComputeUnitsAll"}
# MLMultiArrayDataType values (from CoreML/MLMultiArray.h: 0x10000 | bits for floats).
_DATA_TYPES = {np.dtype(np.float16): 0x10000 | 16, np.dtype(np.float32): 0x10000 | 32}


def pyobjc_available() -> bool:
    """True when PyObjC's Core ML bindings can be imported (macOS with the package)."""
    try:
        importlib.import_module("CoreML")
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class PyObjCPredictor:
    """One loaded ``MLModel``; ``predict`` maps a contiguous input array of the model's
    shape and dtype to a new output array of its output shape and dtype."""

    model: Any  # CoreML.MLModel
    input_name: str
    output_name: str
    output_shape: tuple[int, ...]
    output_dtype: np.dtype

    def predict(self, feed: np.ndarray) -> np.ndarray:
        """Run one prediction. Raises BackendError with Core ML's message on failure."""
        import CoreML
        import objc

        out = np.empty(self.output_shape, self.output_dtype)
        # Objective-C objects made on a worker thread go to this pool, which drains here,
        # rather than to one that never does.
        with objc.autorelease_pool():
            source = _wrap(feed)
            backing = _wrap(out)
            provider = _checked(
                CoreML.MLDictionaryFeatureProvider.alloc().initWithDictionary_error_(
                    {self.input_name: CoreML.MLFeatureValue.featureValueWithMultiArray_(
                        source)}, None), "Core ML rejected the input")
            options = CoreML.MLPredictionOptions.alloc().init()
            options.setOutputBackings_({self.output_name: backing})
            result = _checked(self.model.predictionFromFeatures_options_error_(
                provider, options, None), "Core ML prediction failed")
            produced = result.featureValueForName_(self.output_name).multiArrayValue()
            # Core ML may decline a backing and allocate its own array (documented);
            # identity tells which happened.
            if _objc_id(produced) != _objc_id(backing):
                if not hasattr(produced, "transferToMultiArray_"):
                    raise BackendError("Core ML did not write into the output buffer, and "
                                       "this macOS (before 15) cannot copy its own into "
                                       "it; use the coremltools runtime")
                produced.transferToMultiArray_(backing)  # honours strides, casts dtype
        return out


def load_pyobjc_predictor(compiled: str | os.PathLike[str], compute_units: str, *,
                          input_name: str, output_name: str,
                          output_shape: tuple[int, ...], output_dtype: np.dtype
                          ) -> PyObjCPredictor:
    """Load a compiled ``.mlmodelc`` on ``compute_units`` ('ane', 'gpu', 'cpu', 'all').

    Raises BackendError when PyObjC's Core ML bindings are missing, the compute-unit
    setting is unknown to this macOS, the model cannot be loaded, or ``output_dtype`` is
    not float16/float32.
    """
    try:
        CoreML = importlib.import_module("CoreML")
        Foundation = importlib.import_module("Foundation")
    except ImportError:
        raise BackendError("runtime 'pyobjc' needs PyObjC's Core ML bindings: pip install "
                           "pyobjc-framework-CoreML (or use runtime 'coremltools')") from None
    if np.dtype(output_dtype) not in _DATA_TYPES:
        raise BackendError(f"expected a float16 or float32 output, got {output_dtype}")
    units = getattr(CoreML, _COMPUTE_UNITS.get(compute_units, ""), None)
    if units is None:
        raise BackendError(f"compute units {compute_units!r} are not available in this "
                           "macOS's Core ML ('ane' needs macOS 13)")
    configuration = CoreML.MLModelConfiguration.alloc().init()
    configuration.setComputeUnits_(units)
    url = Foundation.NSURL.fileURLWithPath_(os.fspath(compiled))
    model = _checked(CoreML.MLModel.modelWithContentsOfURL_configuration_error_(
        url, configuration, None), f"Core ML could not load {os.fspath(compiled)}")
    return PyObjCPredictor(model=model, input_name=input_name, output_name=output_name,
                           output_shape=tuple(output_shape),
                           output_dtype=np.dtype(output_dtype))


def _wrap(array: np.ndarray) -> Any:
    """An MLMultiArray over ``array``'s own memory (C-contiguous float16/float32). The
    caller keeps ``array`` alive for as long as Core ML may touch the result."""
    import CoreML

    if not array.flags.c_contiguous or not array.flags.writeable:
        raise ValueError("expected a C-contiguous, writeable array")
    item = array.dtype.itemsize
    strides = [s // item for s in array.strides]
    return _checked(
        CoreML.MLMultiArray.alloc()
        .initWithDataPointer_shape_dataType_strides_deallocator_error_(
            memoryview(array).cast("B"), list(array.shape), _DATA_TYPES[array.dtype],
            strides, None, None),
        f"Core ML could not wrap a {array.dtype} array of shape {array.shape}")


def _checked(answer: tuple[Any, Any], failure: str) -> Any:
    """The object of an Objective-C ``(object, NSError)`` answer; BackendError with
    ``failure`` and the error's text when the object is nil."""
    value, error = answer
    if value is None:
        raise BackendError(f"{failure}: {error}")
    return value


def _objc_id(value: Any) -> int:
    import objc

    return objc.pyobjc_id(value)

