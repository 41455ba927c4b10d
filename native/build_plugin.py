"""Compile native/coreml_esrgan.c into a VapourSynth plugin library, and
native/tile_kernels.c into the tiling engine's kernel library (loaded with ctypes; the
package falls back to its numpy twin where it is missing).

Used by setup.py at install time, and by scripts/venv.sh so a development checkout always
has a current build of both in vs_coreml_esrgan/_native/.
Run: python native/build_plugin.py [TARGET_DIRECTORY]   (needs a C compiler and vapoursynth)
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "native" / "coreml_esrgan.c"
KERNELS_SOURCE = ROOT / "native" / "tile_kernels.c"
DEVELOPMENT_DIR = ROOT / "vs_coreml_esrgan" / "_native"


def library_name() -> str:
    return "libcoreml_esrgan.dylib" if sys.platform == "darwin" else "libcoreml_esrgan.so"


def kernels_library_name() -> str:
    return "libtile_kernels.dylib" if sys.platform == "darwin" else "libtile_kernels.so"


def package_version() -> tuple[int, int]:
    text = (ROOT / "vs_coreml_esrgan" / "version.py").read_text()
    found = re.search(r'__version__ = "(\d+)\.(\d+)', text)
    if not found:
        raise RuntimeError("no __version__ = \"X.Y...\" in vs_coreml_esrgan/version.py")
    return int(found.group(1)), int(found.group(2))


def compile_plugin(directory: Path, *, quiet: bool = False) -> Path:
    """Build the library into ``directory``; returns its path. Raises CalledProcessError
    with the compiler's output when compilation fails."""
    import vapoursynth

    major, minor = package_version()
    target = directory / library_name()
    compiler = shlex.split(os.environ.get("CC", "cc"))
    command = [*compiler, "-shared", "-fPIC", "-O2", "-std=c11", "-Wall", "-Wextra",
               f"-I{vapoursynth.get_include()}", f"-DPLUGIN_VERSION_MAJOR={major}",
               f"-DPLUGIN_VERSION_MINOR={minor}", "-o", str(target), str(SOURCE)]
    if sys.platform != "darwin":
        command.append("-ldl")
    directory.mkdir(parents=True, exist_ok=True)
    if not quiet:
        print("building the coreml_esrgan plugin:", " ".join(command))
    subprocess.run(command, check=True)
    return target


def compile_kernels(directory: Path, *, quiet: bool = False) -> Path:
    """Build the tile kernel library into ``directory`` (plain C11, no dependencies);
    returns its path. Raises CalledProcessError when compilation fails."""
    target = directory / kernels_library_name()
    compiler = shlex.split(os.environ.get("CC", "cc"))
    # -ffp-contract=off: no fused multiply-add, so results equal the numpy twin's bit for
    # bit; -O3 vectorises the row loops (the F16C / NEON conversions are chosen in the code).
    command = [*compiler, "-shared", "-fPIC", "-O3", "-ffp-contract=off", "-std=c11", "-Wall",
               "-Wextra", "-o", str(target), str(KERNELS_SOURCE)]
    directory.mkdir(parents=True, exist_ok=True)
    if not quiet:
        print("building the tile kernels:", " ".join(command))
    subprocess.run(command, check=True)
    return target


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DEVELOPMENT_DIR
    print(compile_plugin(out, quiet=True))
    print(compile_kernels(out, quiet=True))
