"""Loading the ``coreml_esrgan`` namespace plugin in development checkouts."""

from __future__ import annotations

import sys
from pathlib import Path

DEVELOPMENT_DIR = Path(__file__).parent / "_native"


def development_library() -> Path | None:
    """The plugin an editable install built into ``_native/``, if there is one."""
    name = "libcoreml_esrgan.dylib" if sys.platform == "darwin" else "libcoreml_esrgan.so"
    library = DEVELOPMENT_DIR / name
    return library if library.is_file() else None


def load_development_plugin() -> None:
    """Load the development build into the current core unless the namespace is there.

    A normal install never needs this: VapourSynth autoloads the plugin from its own
    plugin directory. Does nothing when there is no development build.
    """
    library = development_library()
    if library is None:
        return
    import vapoursynth as vs

    core = vs.core
    if not hasattr(core, "coreml_esrgan"):
        core.std.LoadPlugin(str(library))
