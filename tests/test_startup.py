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


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    directory = tmp_path / "models"
    directory.mkdir()
    monkeypatch.setenv("VS_COREML_ESRGAN_MODELS", str(directory))
    return directory


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
