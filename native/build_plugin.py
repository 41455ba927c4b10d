"""Compile native/coreml_esrgan.c into a VapourSynth plugin library.

Used by setup.py at install time, and by scripts/venv.sh so a development checkout always
has a current build in vs_coreml_esrgan/_native/.
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
DEVELOPMENT_DIR = ROOT / "vs_coreml_esrgan" / "_native"


def library_name() -> str:
    return "libcoreml_esrgan.dylib" if sys.platform == "darwin" else "libcoreml_esrgan.so"


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


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DEVELOPMENT_DIR
    print(compile_plugin(out, quiet=True))
