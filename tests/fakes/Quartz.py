"""Test double of PyObjC's ``Quartz`` (its CoreVideo part): IOSurface-backed pixel buffers
whose rows are padded, so that a reader ignoring ``CVPixelBufferGetBytesPerRow`` reads the
wrong pixels.

Conventions from pyobjc-framework-Quartz (Lib/Quartz/CoreVideo/_metadata.py,
PyObjCTest/test_cvpixelbuffer.py): ``CVPixelBufferCreate(allocator, width, height, format,
attributes, None)`` answers ``(CVReturn, buffer)`` (argument 5 is an output);
``CVPixelBufferGetBaseAddress`` answers an ``objc.varlist`` whose ``as_buffer(count)`` is a
memoryview of ``count`` bytes; lock and unlock take ``(buffer, flags)``
(``kCVPixelBufferLock_ReadOnly`` 1) and answer a CVReturn. Stricter than CoreVideo where
CoreVideo's behaviour is undefined: the base address is refused outside a lock, memory locked
read-only is handed out read-only, and an unlock must repeat the lock's flags.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

if os.environ.get("FAKE_COREVIDEO") != "1":
    # Absent unless a test asks for it (the ``mac`` fixture's ``surfaces()``): then the
    # runtime's choice between plain and IOSurface buffers, made by timing, cannot make
    # the other tests' outcome depend on the machine's load.
    raise ImportError("No module named 'Quartz' (FAKE_COREVIDEO=1 provides the double)")

kCVReturnSuccess = 0
kCVReturnInvalidArgument = -6661
kCVPixelBufferLock_ReadOnly = 1
kCVPixelFormatType_OneComponent16Half = 1278226536  # 'L00h'
kCVPixelFormatType_OneComponent32Float = 1278226534
kCVPixelBufferIOSurfacePropertiesKey = "IOSurfaceProperties"
# IOSurface rows are padded; Apple developer forum 712709 reports 32 elements (64 bytes of
# float16), the alignment used here.
ROW_ALIGNMENT = 64

created: list[CVPixelBufferRef] = []  # for tests: every buffer made


class CVPixelBufferRef:
    def __init__(self, width: int, height: int, pixel_format: int, iosurface: bool) -> None:
        self.width, self.height, self.pixel_format = width, height, pixel_format
        self.iosurface = iosurface
        self.bytes_per_row = -(-2 * width // ROW_ALIGNMENT) * ROW_ALIGNMENT
        self.memory = bytearray(self.bytes_per_row * height)
        self.locks: list[int] = []


class _VarList:
    """objc.varlist over ``void *``: items are bytes; ``as_buffer(n)`` a memoryview."""

    def __init__(self, memory: memoryview) -> None:
        self._memory = memory

    def as_buffer(self, count: int) -> memoryview:
        if count > len(self._memory):  # a real varlist would read past the allocation
            raise IndexError(f"as_buffer({count}) past the buffer's {len(self._memory)} bytes")
        return self._memory[:count]

    def __getitem__(self, index: int) -> bytes:
        return bytes(self._memory[index:index + 1])


def CVPixelBufferCreate(allocator: Any, width: int, height: int, pixelFormatType: int,
                        pixelBufferAttributes: Any, pixelBufferOut: Any
                        ) -> tuple[int, CVPixelBufferRef | None]:
    if pixelBufferOut is not None:  # PyObjC: an output argument is passed as None
        raise TypeError("output argument 'pixelBufferOut' must be None")
    if allocator is not None or width < 1 or height < 1:
        return kCVReturnInvalidArgument, None
    if pixelFormatType not in (
            kCVPixelFormatType_OneComponent16Half, kCVPixelFormatType_OneComponent32Float):
        return kCVReturnInvalidArgument, None
    iosurface = pixelBufferAttributes is not None and \
        pixelBufferAttributes.objectForKey_(kCVPixelBufferIOSurfacePropertiesKey) is not None
    buffer = CVPixelBufferRef(int(width), int(height), pixelFormatType, iosurface)
    created.append(buffer)
    return kCVReturnSuccess, buffer


def CVPixelBufferLockBaseAddress(buffer: CVPixelBufferRef, flags: int) -> int:
    buffer.locks.append(int(flags))
    return kCVReturnSuccess


def CVPixelBufferUnlockBaseAddress(buffer: CVPixelBufferRef, flags: int) -> int:
    if not buffer.locks or buffer.locks[-1] != int(flags):
        return kCVReturnInvalidArgument
    buffer.locks.pop()
    return kCVReturnSuccess


def CVPixelBufferGetBaseAddress(buffer: CVPixelBufferRef) -> _VarList:
    if not buffer.locks:
        raise RuntimeError("base address taken without locking the pixel buffer")
    view = memoryview(buffer.memory)
    return _VarList(view.toreadonly() if buffer.locks[-1] & kCVPixelBufferLock_ReadOnly
                    else view)


def CVPixelBufferGetBytesPerRow(buffer: CVPixelBufferRef) -> int:
    return buffer.bytes_per_row


def CVPixelBufferGetWidth(buffer: CVPixelBufferRef) -> int:
    return buffer.width


def CVPixelBufferGetHeight(buffer: CVPixelBufferRef) -> int:
    return buffer.height


def plane(buffer: CVPixelBufferRef) -> np.ndarray:
    """For the doubles: the buffer's float16 pixels as ``(height, padded width)``, live."""
    return np.frombuffer(buffer.memory, np.float16).reshape(buffer.height,
                                                            buffer.bytes_per_row // 2)
