"""`pip install .` into a fresh virtual environment: the plugin is autoloaded by vspipe."""

from __future__ import annotations

import os
import subprocess
import sysconfig
import textwrap
import venv
from pathlib import Path

import numpy as np
import pytest
import vapoursynth as vs
from conftest import compact

from vs_coreml_esrgan import upscale
from vs_coreml_esrgan._plugin import development_library

ROOT = Path(__file__).resolve().parent.parent


def _pip(python: Path, *args: str) -> None:
    result = subprocess.run([str(python), "-m", "pip", "install", "-q",
                             "--disable-pip-version-check", *args],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory) -> Path:
    """A new environment with VapourSynth (the same release as here) and numpy only."""
    directory = tmp_path_factory.mktemp("fresh") / "venv"
    venv.EnvBuilder(with_pip=True, symlinks=True).create(directory)
    python = directory / "bin" / "python"
    _pip(python, f"vapoursynth=={vs.__version__.release_major}", "numpy")
    # vspipe finds its Python through VapourSynth's per-user configuration; keep this
    # temporary environment's entry out of the user's own file.
    subprocess.run([str(directory / "bin" / "vapoursynth"), "config"], check=True,
                   capture_output=True, env=_env(directory))
    return python


def _env(venv_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "VAPOURSYNTH_EXTRA_PLUGIN_PATH"}
    return env | {"XDG_CONFIG_HOME": str(venv_dir.parent / "config")} | extra


def _vspipe(python: Path, script: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(python.parent / "vspipe"), "-c", "y4m", str(script), "-"],
                          capture_output=True, env=env, timeout=300)


def test_pip_install_then_namespace_without_import(fresh_venv, tmp_path, make_checkpoint):
    model = make_checkpoint(compact(scale=2, num_conv=2))
    script = tmp_path / "only_vapoursynth.vpy"
    script.write_text(textwrap.dedent(f"""
        import vapoursynth as vs
        clip = vs.core.std.BlankClip(format=vs.YUV420P8, width=40, height=30, length=2,
                                     color=[80, 100, 160])
        vs.core.coreml_esrgan.Upscale(clip, model={str(model)!r}, backend="torch",
                                      device="cpu").set_output()
        """))
    env = _env(fresh_venv.parent.parent)

    # Before the package is installed, the plugin alone says what is missing.
    library = development_library()
    if library is not None:
        missing = _vspipe(fresh_venv, script,
                          env | {"VAPOURSYNTH_EXTRA_PLUGIN_PATH": str(library.parent)})
        assert missing.returncode == 1
        assert ("Upscale: the Python package vs_coreml_esrgan cannot be imported "
                "(ModuleNotFoundError") in missing.stderr.decode()
        assert "python -m pip install vs-coreml-esrgan" in missing.stderr.decode()

    _pip(fresh_venv, "--no-deps", str(ROOT))
    plugin_dir = subprocess.run([str(fresh_venv), "-c", "import vapoursynth as vs; "
                                 "print(vs.get_plugin_dir())"], capture_output=True,
                                text=True, check=True).stdout.strip()
    assert any(p.name.startswith("libcoreml_esrgan") for p in Path(plugin_dir).iterdir())
    # the tile kernels are built into the installed package, and load
    kernels = subprocess.run([str(fresh_venv), "-c", "from vs_coreml_esrgan.pixel_kernels "
                              "import native_kernels; print(native_kernels().name)"],
                             capture_output=True, text=True, cwd=tmp_path, env=env)
    assert kernels.stdout.strip() == "native", kernels.stderr
    # torch and the rest come from this environment, after the fresh one's own packages.
    site = Path(subprocess.run([str(fresh_venv), "-c", "import sysconfig; "
                                "print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    result = _vspipe(fresh_venv, script, env)
    assert result.returncode == 0, result.stderr.decode()
    header, _, rest = result.stdout.partition(b"\n")
    assert b" W80 H60 " in header
    frames = rest.split(b"FRAME\n")[1:]
    assert len(frames) == 2
    clip = vs.core.std.BlankClip(format=vs.YUV420P8, width=40, height=30, length=2,
                                 color=[80, 100, 160])
    expected = np.asarray(upscale(clip, model).get_frame(0)[0])
    np.testing.assert_array_equal(np.frombuffer(frames[0], np.uint8, 80 * 60).reshape(60, 80),
                                  expected)

