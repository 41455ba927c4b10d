"""Build step for the native ``coreml_esrgan`` plugin (see native/coreml_esrgan.c).

Everything else is declared in pyproject.toml. The plugin is a plain shared library, not a
Python extension: a normal install puts it where VapourSynth autoloads plugins
(``vapoursynth/plugins/`` in site-packages); an editable install builds it into
``vs_coreml_esrgan/_native/``, from where importing the package loads it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

sys.path.insert(0, str(Path(__file__).resolve().parent / "native"))
from build_plugin import DEVELOPMENT_DIR, compile_kernels, compile_plugin


class BuildWithPlugin(build_py):
    def run(self) -> None:
        super().run()
        if sys.platform == "win32":
            print("the coreml_esrgan namespace plugin and the tile kernels are not built on "
                  "Windows; use vs_coreml_esrgan.upscale from Python (numpy stitching)")
        elif self.editable_mode:
            compile_plugin(DEVELOPMENT_DIR)
            compile_kernels(DEVELOPMENT_DIR)
        else:
            compile_plugin(Path(self.build_lib) / "vapoursynth" / "plugins")
            compile_kernels(Path(self.build_lib) / "vs_coreml_esrgan" / "_native")


class BinaryDistribution(Distribution):
    """The wheel carries a native library, so it is platform-specific."""

    def has_ext_modules(self) -> bool:
        return sys.platform != "win32"


setup(cmdclass={"build_py": BuildWithPlugin}, distclass=BinaryDistribution)
