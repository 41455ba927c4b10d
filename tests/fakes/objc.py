"""Test double of pyobjc-core's ``objc`` module: what the Core ML runtime uses of it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

pools_drained = 0


@contextlib.contextmanager
def autorelease_pool() -> Iterator[None]:
    global pools_drained
    try:
        yield
    finally:
        pools_drained += 1


def pyobjc_id(value: object) -> int:
    """The Objective-C object's address; a proxy's identity stands in for it here."""
    return id(value)
