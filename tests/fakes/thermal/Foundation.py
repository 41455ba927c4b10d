"""Test double of PyObjC's ``Foundation`` for the thermal state only:
``NSProcessInfo.processInfo().thermalState()``, an NSProcessInfoThermalState value
(Nominal 0, Fair 1, Serious 2, Critical 3, as in PyObjC's test_nsprocessinfo.py).

The states come from ``$FAKE_THERMAL_STATES``, a comma-separated list read one value a
call, the last one repeating (default: always 0). Kept apart from ``tests/fakes``'s
Core ML doubles so a job under test sees only this."""

from __future__ import annotations

import os
import threading

NSProcessInfoThermalStateNominal = 0
NSProcessInfoThermalStateFair = 1
NSProcessInfoThermalStateSerious = 2
NSProcessInfoThermalStateCritical = 3


class NSProcessInfo:
    _shared: NSProcessInfo | None = None

    def __init__(self) -> None:
        self._calls = 0
        self._lock = threading.Lock()

    @classmethod
    def processInfo(cls) -> NSProcessInfo:
        if cls._shared is None:
            cls._shared = cls()
        return cls._shared

    def thermalState(self) -> int:
        states = [int(s) for s in os.environ.get("FAKE_THERMAL_STATES", "0").split(",")]
        with self._lock:
            index = min(self._calls, len(states) - 1)
            self._calls += 1
        return states[index]
