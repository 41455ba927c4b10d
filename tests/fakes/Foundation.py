"""Test double of PyObjC's ``Foundation``: NSString, NSDictionary, NSURL, NSError."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class NSObject:
    @classmethod
    def alloc(cls) -> Any:
        return cls.__new__(cls)

    def init(self) -> Any:
        return self

    def isKindOfClass_(self, kind: type) -> bool:
        return isinstance(self, kind)


class _NSStringObject(NSObject):
    """A real (non-proxy) Objective-C string."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __eq__(self, other: object) -> bool:
        return str(self) == str(other)

    def __hash__(self) -> int:
        return hash(self.text)

    def __str__(self) -> str:
        return self.text


class _PyObjCUnicode(str):
    """objc.pyobjc_unicode: what PyObjC answers for an NSString result."""

    def nsstring(self) -> _NSStringObject:
        return _NSStringObject(str(self))


class NSString(NSObject):
    @classmethod
    def stringWithString_(cls, text: Any) -> _PyObjCUnicode:
        if not isinstance(text, str | _NSStringObject):
            raise TypeError(f"expected a string, got {type(text).__name__}")
        return _PyObjCUnicode(str(text))


class NSDictionary(NSObject):
    def __init__(self, items: dict) -> None:
        self._items = items

    @classmethod
    def dictionary(cls) -> NSDictionary:
        return cls({})

    @classmethod
    def dictionaryWithObject_forKey_(cls, value: Any, key: Any) -> NSDictionary:
        if value is None or key is None:
            raise ValueError("NSDictionary: nil object or key")
        return cls({str(key): value})

    def objectForKey_(self, key: Any) -> Any:
        return self._items.get(str(key))

    def __iter__(self):  # PyObjC's NSDictionary iterates over its keys, as a dict does
        return iter(self._items)


class NSURL(NSObject):
    def __init__(self, path: str) -> None:
        self._path = path

    @classmethod
    def fileURLWithPath_(cls, path: Any) -> NSURL:
        if not isinstance(path, str):
            raise TypeError(f"expected a str path, got {type(path).__name__}")
        return cls(str(Path(path).absolute()))

    def path(self) -> str:
        return self._path


class NSError(NSObject):
    def __init__(self, description: str) -> None:
        self._description = description

    def localizedDescription(self) -> str:
        return self._description

    def __str__(self) -> str:
        return f"Error Domain=com.apple.CoreML Code=0 \"{self._description}\""
