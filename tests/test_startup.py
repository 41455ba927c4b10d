"""Catalogue commands answer without PyTorch or spandrel (issue 23 item 25): the official
models' descriptions are in the catalogue, checked here against what loading them gives;
how fast the commands are is measured by hand (README), not timed here."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from vs_coreml_esrgan.catalogue import (
    KNOWN_MODELS,
    ResolvedModel,
    known_spec,
    resolve_model,
)
from vs_coreml_esrgan.checkpoint import file_sha256, load_model


@pytest.mark.parametrize("known", KNOWN_MODELS, ids=lambda m: m.name)
def test_catalogue_description_is_what_loading_gives(model_dir, known):
    resolved = resolve_model(known.name)
    assert file_sha256(resolved.path) == known.param_sha256
    assert known_spec(resolved) == load_model(resolved.path).spec == known.spec
    assert (known.spec.scale, known.spec.arch) == (known.scale, known.arch)


def test_another_graph_or_a_users_file_is_loaded_not_looked_up(model_dir, tmp_path,
                                                               make_checkpoint):
    from conftest import compact

    packaged = resolve_model("realesr-animevideov3")
    changed = tmp_path / "REALESRGAN_ANIMAVIDEOV3_UP4X.param"
    changed.write_text(packaged.path.read_text() + "\n")
    shutil.copy(packaged.path.with_suffix(".bin"), changed.with_suffix(".bin"))
    assert known_spec(ResolvedModel(packaged.name, changed, packaged.origin)) is None
    mine = make_checkpoint(compact(scale=2), name="realesr-animevideov3")
    shutil.copy(mine, model_dir / mine.name)
    resolved = resolve_model("realesr-animevideov3")
    assert resolved.origin == "user directory" and known_spec(resolved) is None


_NO_TORCH = """
import sys
from vs_coreml_esrgan.cli import main
status = main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "spandrel", "torchvision", "coremltools")
               if m in sys.modules)
print("imported:", heavy, file=sys.stderr)
raise SystemExit(status)
"""


@pytest.mark.parametrize("command", [["models"], ["inspect", "realesr-animevideov3"],
                                     ["inspect", "realesrgan-x4plus"], ["cache"]])
def test_catalogue_commands_import_neither_torch_nor_spandrel(model_dir, command):
    result = subprocess.run([sys.executable, "-c", _NO_TORCH, *command], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "imported: []" in result.stderr
    if command[0] == "inspect":
        assert f"x4 ({'64nf, 16nc' if 'anime' in command[1] else '64nf, 23nb'})" in \
            result.stdout
    if command == ["models"]:
        assert "realesrgan-x4plus " in result.stdout and "Compact" in result.stdout
        assert "architectures (spandrel " in result.stdout and "SwinIR" in result.stdout


_FAKE_PYTHON = """#!/bin/sh
# Stands in for every python venv.sh runs: the version check, the key, venv, pip, the
# plugin build. Records nothing, downloads nothing.
case "$1" in
  -c) exit 0 ;;
  -) cat >/dev/null; echo 0123456789abcdef ;;
  -m) if [ "$2" = venv ]; then
        mkdir -p "$3/bin"; cp "$0" "$3/bin/python"
        printf '#!/bin/sh\\nexit 0\\n' > "$3/bin/vapoursynth"; chmod +x "$3/bin/vapoursynth"
      fi ;;
esac
exit 0
"""


def test_first_setup_says_each_step_when_not_on_a_terminal(tmp_path):
    """scripts/venv.sh's first run, its python faked: with stderr a file, every step is
    a line (it used to print one line and pip's warnings)."""
    from pathlib import Path

    fake = tmp_path / "python3.12"
    fake.write_text(_FAKE_PYTHON)
    fake.chmod(0o755)
    root = Path(__file__).resolve().parent.parent
    log = tmp_path / "setup log.txt"
    with open(log, "w") as stderr:
        result = subprocess.run(
            ["bash", "-c", f"source {root}/scripts/venv.sh && prepare_venv dev"],
            env={"PATH": "/usr/bin:/bin", "PYTHON": str(fake), "HOME": str(tmp_path),
                 "VS_COREML_ESRGAN_VENV_CACHE": str(tmp_path / "cache")},
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, timeout=60)
    text = log.read_text()
    assert result.returncode == 0, text
    for step in ("Setting up", "about 6.3 GB", "1/4 creating the virtual environment",
                 "2/4 upgrading pip", "3/4 downloading and installing vs-coreml-esrgan[dev]",
                 "4/4 configuring VapourSynth", "environment ready"):
        assert step in text, (step, text)
