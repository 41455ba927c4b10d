"""Test double of PyObjC's ``CoreML`` (see README.md beside this file for its sources)."""

from __future__ import annotations

import os
import time
from typing import Any

import _lies
import numpy as np
from coremltools_doubles import source_package
from Foundation import NSURL, NSDictionary, NSError, NSObject

MLComputeUnitsCPUOnly = 0
MLComputeUnitsCPUAndGPU = 1
MLComputeUnitsAll = 2
MLComputeUnitsCPUAndNeuralEngine = 3
MLMultiArrayDataTypeDouble = 0x10000 | 64
MLMultiArrayDataTypeFloat32 = 0x10000 | 32
MLMultiArrayDataTypeFloat16 = 0x10000 | 16
MLMultiArrayDataTypeInt32 = 0x20000 | 32
_DTYPES = {MLMultiArrayDataTypeFloat16: np.float16, MLMultiArrayDataTypeFloat32: np.float32,
           MLMultiArrayDataTypeDouble: np.float64}

# What the doubles saw, for tests to check the runtime's conventions.
received_dictionaries: list[type] = []
wrapped_strides: list[tuple[int, ...]] = []
wrapped_addresses: list[int] = []
surface_arrays: list[tuple[int, ...]] = []  # shapes wrapped by initWithPixelBuffer_shape_


def _out_argument(error: Any) -> None:
    if error is not None:  # PyObjC: an output argument is passed as None
        raise TypeError("output argument 'error' must be None")


def _units_listed(variable: str, units: int) -> bool:
    return _lies.listed(variable, units)


class MLCPUComputeDevice(NSObject):
    pass


class MLGPUComputeDevice(NSObject):
    pass


class MLNeuralEngineComputeDevice(NSObject):
    pass


def MLAllComputeDevices() -> list:
    """macOS 14+: the devices Core ML may use; ``FAKE_COREML_DEVICES`` (comma-separated
    'CPU', 'GPU', 'Neural Engine') says which this Mac has, all three by default (a
    virtual machine has only the CPU)."""
    kinds = {"CPU": MLCPUComputeDevice, "GPU": MLGPUComputeDevice,
             "Neural Engine": MLNeuralEngineComputeDevice}
    named = os.environ.get("FAKE_COREML_DEVICES", "CPU,GPU,Neural Engine").split(",")
    return [kinds[name].alloc().init() for name in named if name in kinds]


class MLMultiArray(NSObject):
    def initWithDataPointer_shape_dataType_strides_deallocator_error_(
            self, pointer: Any, shape: Any, dataType: int, strides: Any, deallocator: Any,
            error: Any) -> tuple[Any, Any]:
        _out_argument(error)
        if isinstance(pointer, str):  # PyObjC_PythonToCArray refuses text
            raise TypeError("Expecting byte-buffer, got str")
        view = memoryview(pointer)  # TypeError when it has no buffer, as PyObjC
        if not view.c_contiguous:
            raise BufferError("ndarray is not C-contiguous")
        if deallocator is not None and not callable(deallocator):
            raise TypeError("deallocator must be a block (callable) or None")
        shape, strides = [int(v) for v in shape], [int(v) for v in strides]
        if dataType not in _DTYPES:
            return None, NSError(f"unsupported data type {dataType:#x}")
        if len(shape) != len(strides) or min(shape) < 1 or min(strides) < 1:
            return None, NSError(f"invalid shape {shape} / strides {strides}")
        dtype = np.dtype(_DTYPES[dataType])
        flat = np.frombuffer(view.cast("B"), np.uint8)
        last = sum((n - 1) * s for n, s in zip(shape, strides, strict=True))
        if (last + 1) * dtype.itemsize > flat.size:
            return None, NSError("strides reach beyond the data")
        self._array = np.lib.stride_tricks.as_strided(
            flat.view(dtype), shape, [s * dtype.itemsize for s in strides])
        wrapped_strides.append(tuple(strides))
        wrapped_addresses.append(flat.ctypes.data)
        return self, None

    def initWithPixelBuffer_shape_(self, pixelBuffer: Any, shape: Any) -> Any:
        """macOS 12+ (no error argument: nil when refused). Apple: an IOSurface-backed
        OneComponent16Half buffer; the last dimension is its width, the product of the rest
        its height. The array reads and writes the buffer's padded rows in place."""
        import Quartz

        shape = [int(v) for v in shape]
        if not isinstance(pixelBuffer, Quartz.CVPixelBufferRef) or not pixelBuffer.iosurface \
                or pixelBuffer.pixel_format != Quartz.kCVPixelFormatType_OneComponent16Half:
            return None
        if not shape or min(shape) < 1 or shape[-1] != pixelBuffer.width \
                or int(np.prod(shape[:-1])) != pixelBuffer.height:
            return None
        row = pixelBuffer.bytes_per_row
        strides = [int(np.prod(shape[i + 1:-1])) * row for i in range(len(shape) - 1)] + [2]
        self._array = np.lib.stride_tricks.as_strided(
            Quartz.plane(pixelBuffer).reshape(-1), shape, strides)
        self._pixel_buffer = pixelBuffer
        surface_arrays.append(tuple(shape))
        return self

    @classmethod
    def _owning(cls, array: np.ndarray) -> MLMultiArray:
        made = cls.alloc()
        made._array = array
        return made

    def shape(self) -> list[int]:
        return list(self._array.shape)

    def strides(self) -> list[int]:
        return [n // self._array.itemsize for n in self._array.strides]

    def dataType(self) -> int:
        return next(code for code, dtype in _DTYPES.items() if dtype == self._array.dtype)

    def getBytesWithHandler_(self, handler: Any) -> None:
        # PyObjC: the block gets (bytes, size); the bytes cover the array's whole extent.
        last = sum((n - 1) * s for n, s in zip(self._array.shape, self._array.strides,
                                               strict=True)) + self._array.itemsize
        raw = np.lib.stride_tricks.as_strided(self._array.view(np.uint8), (last,), (1,))
        handler(raw.tobytes(), last)

    def transferToMultiArray_(self, destination: MLMultiArray) -> None:
        np.copyto(destination._array, self._array, casting="unsafe")


class MLFeatureValue(NSObject):
    @classmethod
    def featureValueWithMultiArray_(cls, array: MLMultiArray) -> MLFeatureValue:
        if not isinstance(array, MLMultiArray):
            raise TypeError("expected an MLMultiArray")
        value = cls.alloc()
        value._array = array
        return value

    def multiArrayValue(self) -> MLMultiArray:
        return self._array


class MLDictionaryFeatureProvider(NSObject):
    def initWithDictionary_error_(self, dictionary: Any, error: Any) -> tuple[Any, Any]:
        _out_argument(error)
        received_dictionaries.append(type(dictionary))
        self._values = {key: dictionary.objectForKey_(key) for key in dictionary} \
            if isinstance(dictionary, NSDictionary) else dict(dictionary)
        if not all(isinstance(v, MLFeatureValue) for v in self._values.values()):
            return None, NSError("values must be MLFeatureValue")
        return self, None

    def featureValueForName_(self, name: str) -> MLFeatureValue | None:
        return self._values.get(str(name))


class MLPredictionOptions(NSObject):
    _backings: Any = None

    def setOutputBackings_(self, backings: Any) -> None:
        received_dictionaries.append(type(backings))
        self._backings = backings

    def outputBackings(self) -> Any:
        return self._backings


class MLModelConfiguration(NSObject):
    _units = MLComputeUnitsAll

    def setComputeUnits_(self, units: int) -> None:
        if units not in (0, 1, 2, 3):
            raise ValueError(f"depythonifying 'long', got {units!r}")
        self._units = units

    def computeUnits(self) -> int:
        return self._units


class MLModel(NSObject):
    @classmethod
    def modelWithContentsOfURL_configuration_error_(cls, url: NSURL, configuration: Any,
                                                    error: Any) -> tuple[Any, Any]:
        _out_argument(error)
        from vs_coreml_esrgan.coreml.mil import MilProgram

        units = configuration.computeUnits()
        kill = _lies.on_load(units)
        if _units_listed("FAKE_COREML_FAIL_UNITS", units):
            return None, NSError("ANECCompile() FAILED")
        time.sleep(_lies.delay_s("FAKE_COREML_LOAD_DELAY_MS", units))
        if not os.path.isdir(url.path()):
            return None, NSError(f"no model at {url.path()}")
        model = cls.alloc()
        model._program = MilProgram.load(source_package(url.path()))
        if _lies.compile_rejected(units, model._program.info.input_shape):
            return None, NSError("ANECCompile() FAILED")
        model._units = units
        model._kill = kill
        model._delay = _lies.delay_s("FAKE_COREML_DELAY_MS", units)
        return model, None

    def predictionFromFeatures_options_error_(self, provider: Any, options: Any,
                                              error: Any) -> tuple[Any, Any]:
        _out_argument(error)
        info = self._program.info
        value = provider.featureValueForName_(info.input_name)
        if value is None:
            return None, NSError(f"missing input {info.input_name}")
        feed = np.array(value.multiArrayValue()._array)
        if feed.shape != info.input_shape:
            return None, NSError(f"input shape {feed.shape}, expected {info.input_shape}")
        _lies.on_predict(self._kill)
        surface = getattr(value.multiArrayValue(), "_pixel_buffer", None) is not None
        time.sleep(max(0.0, self._delay + (_lies.delay_s("FAKE_COREML_SURFACE_DELAY_MS",
                                                          self._units) if surface else 0)))
        result = _lies.answer(self._units, self._program(feed.astype(info.input_dtype)))
        backings = options.outputBackings() if options is not None else None
        backing = backings.objectForKey_(info.output_name) if backings is not None else None
        if backing is None or os.environ.get("FAKE_COREML_DECLINE_BACKING"):
            # Core ML's own array, in the program's output type (Float16 for a float16
            # program), rows padded as IOSurface-backed arrays are (Apple forum 712709).
            n, c, h, w = result.shape
            padded = np.zeros((n, c, h, w + 7), info.output_dtype)[..., :w]
            padded[...] = result
            produced = MLMultiArray._owning(padded)
        else:
            np.copyto(backing._array, result, casting="unsafe")
            produced = backing
        answer = MLDictionaryFeatureProvider.alloc()
        answer._values = {info.output_name: MLFeatureValue.featureValueWithMultiArray_(
            produced)}
        return answer, None
