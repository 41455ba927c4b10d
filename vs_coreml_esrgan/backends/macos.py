"""The Mac we run on: macOS version and chip. Needs nothing but the standard library."""

from __future__ import annotations

import platform
import subprocess
import sys

from . import BackendError


def macos_version() -> tuple[int, ...] | None:
    """(major, minor[, patch]) of the running macOS; None on any other system."""
    if sys.platform != "darwin":
        return None
    release = platform.mac_ver()[0]
    try:
        parts = tuple(int(part) for part in release.split("."))
    except ValueError:
        return None
    return parts + (0,) * (2 - len(parts))  # '15' is 15.0


def version_text(version: tuple[int, ...] | None = None) -> str:
    """'macOS 14.4.1', or 'not macOS'."""
    version = macos_version() if version is None else version
    return "macOS " + ".".join(map(str, version)) if version else "not macOS"


def at_least(minimum: tuple[int, int]) -> bool:
    """Whether this is macOS ``minimum`` or later (False off macOS)."""
    version = macos_version()
    return version is not None and version[:2] >= minimum


def require(minimum: tuple[int, int], what: str) -> None:
    """Raise BackendError naming ``what`` and the macOS it needs when this one is older."""
    if not at_least(minimum):
        raise BackendError(f"{what} needs macOS {minimum[0]}.{minimum[1]} or later; this is "
                           f"{version_text()}")


def build_text() -> str:
    """The macOS build ('23E224'; ``sysctl kern.osversion``); '' elsewhere or unknown."""
    return _sysctl("kern.osversion")


def has_battery() -> bool:
    """Whether this Mac has a battery (``pmset -g batt`` lists an InternalBattery, as
    ``man pmset`` describes its battery status output; not checked on a Mac here)."""
    if sys.platform != "darwin":
        return False
    try:
        listed = subprocess.run(["pmset", "-g", "batt"], capture_output=True, text=True,
                                timeout=5, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "InternalBattery" in listed


def _sysctl(name: str) -> str:
    if sys.platform != "darwin":
        return ""
    try:
        named = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True,
                               timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return ""
    return named.stdout.strip()


def chip_name() -> str:
    """The processor as macOS names it ('Apple M2 Pro'); the machine type elsewhere."""
    return _sysctl("machdep.cpu.brand_string") or platform.machine() or "unknown"
