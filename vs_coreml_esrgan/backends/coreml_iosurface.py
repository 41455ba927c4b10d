"""IOSurface-backed Core ML buffers (runtime 'pyobjc', buffers 'iosurface'), macOS only.

Why: Apple documents ``MLMultiArray initWithPixelBuffer:shape:`` (macOS 12+) as creating
"an IOSurface-backed MLMultiArray that reduces the inference latency by avoiding the buffer
copy to and from some compute units", and Apple engineers said the Neural Engine writes
into an output directly only when it is IOSurface-backed. Whether that is faster on a
given Mac is measured, not assumed: the trial child times these buffers beside the plain
ones (``coreml_trial``), checks both with the parity gate, and the faster passing one is
used. Nothing here was run on a Mac.

Checked against (not against a Mac):
- Apple's documentation of ``init(pixelBuffer:shape:)``: the pixel format must be
  ``kCVPixelFormatType_OneComponent16Half`` (the array is Float16); "the last dimension of
  shape must match the pixel buffer's width. The product of the rest of the dimensions
  must match the height"; the array owns the pixel buffer. PyObjC binds the selector
  without an ``error:`` argument (pyobjc-framework-CoreML/metadata/raw/arm64-26.5.fwinfo,
  introduced 12.0): it answers the array or None.
- pyobjc-framework-Quartz/Lib/Quartz/CoreVideo/_metadata.py: ``CVPixelBufferCreate`` is
  ``i^{__CFAllocator=}QQI^{__CFDictionary=}^^{__CVBuffer=}`` with argument 5 an ``o``
  output, so PyObjC answers ``(CVReturn, pixelBuffer)`` for ``None`` passed there;
  ``CVPixelBufferGetBaseAddress`` returns ``^v`` with ``c_array_of_variable_length``: an
  ``objc.varlist`` (pyobjc-framework-Quartz/PyObjCTest/test_cvpixelbuffer.py), whose
  ``as_buffer(count)`` is a writable memoryview of ``count`` items, one byte each for
  ``void`` (pyobjc-core/Modules/objc/varlist.m, objc_support.m: sizeof void is 1);
  ``CVPixelBufferLockBaseAddress`` / ``Unlock`` take ``(buffer, flags)`` and answer a
  CVReturn (``kCVReturnSuccess`` 0), ``kCVPixelBufferLock_ReadOnly`` is 1,
  ``kCVPixelFormatType_OneComponent16Half`` 1278226536 ('L00h'),
  ``kCVPixelBufferIOSurfacePropertiesKey`` a string constant; the module is ``Quartz``
  (the tests there call ``Quartz.CVPixelBufferCreate``).
- Apple's CoreVideo/CVPixelBuffer.h (macOS SDK 11.3, as vendored in
  phracker/MacOSX-SDKs): ``kCVPixelBufferIOSurfacePropertiesKey`` is a CFDictionary whose
  "presence requests buffer allocation via IOSurface" (so an empty one); "retrieving the
  base address ... requires that the buffer base address be locked"; lock and unlock both
  take ``CVPixelBufferLockFlags`` (unlocked here with the flags of the lock).
- Rows of such buffers are padded (Apple developer forum thread 712709: to 32 elements),
  so every CPU access here follows ``CVPixelBufferGetBytesPerRow``, inside that lock.
"""

from __future__ import annotations

import contextlib
import importlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import BackendError, macos
from .coreml_pyobjc import checked, copy_declined, ns_dictionary

# macOS 12 brought initWithPixelBuffer:shape: (Apple's documentation).
SURFACE_MACOS = (12, 0)
LOCK_READ_WRITE = 0
LOCK_READ_ONLY = 1  # kCVPixelBufferLock_ReadOnly


def surfaces_available(input_dtype: np.dtype, output_dtype: np.dtype) -> bool:
    """Whether IOSurface-backed buffers can carry this program's tensors here: macOS 12+,
    PyObjC's Quartz (CoreVideo) bindings, float16 input and output (the only element type
    of OneComponent16Half)."""
    if np.dtype(input_dtype) != np.float16 or np.dtype(output_dtype) != np.float16:
        return False
    if not macos.at_least(SURFACE_MACOS):
        return False
    try:
        importlib.import_module("Quartz")
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class Surface:
    """An IOSurface-backed ``CVPixelBuffer`` of OneComponent16Half holding a tensor of
    ``shape``: width ``shape[-1]``, height the product of the rest; ``array`` is the
    ``MLMultiArray`` over it."""

    buffer: Any
    array: Any
    shape: tuple[int, ...]

    @property
    def plane(self) -> tuple[int, int]:
        """(height, width) of the pixel buffer."""
        return math.prod(self.shape[:-1]), self.shape[-1]


def make_surface(shape: tuple[int, ...]) -> Surface:
    """A new IOSurface-backed float16 surface for a tensor of ``shape``. Raises
    BackendError when CoreVideo or Core ML refuses it."""
    import CoreML
    import Foundation

    Quartz = importlib.import_module("Quartz")
    height, width = math.prod(shape[:-1]), shape[-1]
    # An empty IOSurface properties dictionary asks for an IOSurface-backed buffer.
    attributes = ns_dictionary(Foundation, Quartz.kCVPixelBufferIOSurfacePropertiesKey,
                                Foundation.NSDictionary.dictionary())
    status, buffer = Quartz.CVPixelBufferCreate(
        None, width, height, Quartz.kCVPixelFormatType_OneComponent16Half, attributes, None)
    if status != Quartz.kCVReturnSuccess or buffer is None:
        raise BackendError(f"CoreVideo could not create a {width}x{height} float16 "
                           f"IOSurface pixel buffer (CVReturn {status})")
    array = CoreML.MLMultiArray.alloc().initWithPixelBuffer_shape_(buffer, list(shape))
    if array is None:
        raise BackendError(f"Core ML could not wrap a {width}x{height} pixel buffer as a "
                           f"tensor of shape {shape}")
    return Surface(buffer=buffer, array=array, shape=tuple(shape))


@contextlib.contextmanager
def locked_plane(surface: Surface, *, read_only: bool) -> Iterator[np.ndarray]:
    """The surface's pixels as a float16 ``(height, width)`` view that follows the
    buffer's row stride (rows are padded), valid only inside this block (the base address
    is locked for it). Writable unless ``read_only``. Raises BackendError when CoreVideo
    refuses the lock or reports an impossible row stride."""
    Quartz = importlib.import_module("Quartz")
    flags = LOCK_READ_ONLY if read_only else LOCK_READ_WRITE
    status = Quartz.CVPixelBufferLockBaseAddress(surface.buffer, flags)
    if status != Quartz.kCVReturnSuccess:
        raise BackendError(f"CoreVideo could not lock a pixel buffer (CVReturn {status})")
    try:
        height, width = surface.plane
        row_bytes = int(Quartz.CVPixelBufferGetBytesPerRow(surface.buffer))
        if row_bytes < 2 * width or row_bytes % 2:
            raise BackendError(f"a {width}-wide float16 pixel buffer reports {row_bytes} "
                               "bytes per row")
        # The last row need not be padded: ask for exactly the bytes the pixels span.
        size = row_bytes * (height - 1) + 2 * width
        memory = Quartz.CVPixelBufferGetBaseAddress(surface.buffer).as_buffer(size)
        flat = np.frombuffer(memory, np.uint8, count=size).view(np.float16)
        yield np.lib.stride_tricks.as_strided(flat, (height, width), (row_bytes, 2),
                                              writeable=not read_only)
    finally:
        Quartz.CVPixelBufferUnlockBaseAddress(surface.buffer, flags)


def write_surface(surface: Surface, values: np.ndarray) -> None:
    """Copy ``values`` (the surface's shape) into it, row by padded row."""
    with locked_plane(surface, read_only=False) as plane:
        np.copyto(plane, values.reshape(surface.plane), casting="unsafe")


def read_surface(surface: Surface, out: np.ndarray) -> None:
    """Copy the surface's tensor into ``out`` (its shape), row by padded row."""
    with locked_plane(surface, read_only=True) as plane:
        np.copyto(out.reshape(surface.plane), plane, casting="unsafe")


@dataclass(frozen=True)
class SurfacePredictor:
    """One loaded ``MLModel`` fed from and answering into IOSurface-backed arrays, made
    once and reused (the backend runs one prediction at a time). ``predict`` maps a
    float16 array of the input shape to a new float16 array of the output shape."""

    model: Any  # CoreML.MLModel
    input_name: str
    output_name: str
    source: Surface
    target: Surface

    def predict(self, feed: np.ndarray) -> np.ndarray:
        """Run one prediction. Raises BackendError with Core ML's message on failure."""
        import CoreML
        import Foundation
        import objc

        out = np.empty(self.target.shape, np.float16)
        write_surface(self.source, feed)
        with objc.autorelease_pool():
            provider = checked(
                CoreML.MLDictionaryFeatureProvider.alloc().initWithDictionary_error_(
                    ns_dictionary(Foundation, self.input_name,
                                   CoreML.MLFeatureValue.featureValueWithMultiArray_(
                                       self.source.array)), None),
                "Core ML rejected the input")
            options = CoreML.MLPredictionOptions.alloc().init()
            options.setOutputBackings_(ns_dictionary(Foundation, self.output_name,
                                                      self.target.array))
            result = checked(self.model.predictionFromFeatures_options_error_(
                provider, options, None), "Core ML prediction failed")
            produced = result.featureValueForName_(self.output_name).multiArrayValue()
            declined = objc.pyobjc_id(produced) != objc.pyobjc_id(self.target.array)
            if declined:
                # Into the surface on macOS 15+ (transferToMultiArray:), else into ``out``.
                copy_declined(produced, self.target.array, out)
        if not declined or macos.at_least((15, 0)):
            read_surface(self.target, out)
        return out


def surface_predictor(model: Any, *, input_name: str, output_name: str,
                      input_shape: tuple[int, ...], output_shape: tuple[int, ...]
                      ) -> SurfacePredictor:
    """A predictor on IOSurface-backed buffers for an already loaded ``model``. Raises
    BackendError when the surfaces cannot be made."""
    return SurfacePredictor(model=model, input_name=input_name, output_name=output_name,
                            source=make_surface(tuple(input_shape)),
                            target=make_surface(tuple(output_shape)))
