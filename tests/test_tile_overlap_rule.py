"""One rule for every tile (issue 23 item 10): a side shorter than the frame's needs
2 x overlap + 1 pixels; a side that covers the frame needs none, whether the tile was
chosen automatically, given explicitly or compiled into a package; and every refusal
names the overlap that would do."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import vapoursynth as vs
from conftest import compact, random_network
from vs_helpers import clip_from_arrays, frame_array, random_rgb

from vs_coreml_esrgan import upscale
from vs_coreml_esrgan.checkpoint import load_model

# 16 convolutions + 2: the default overlap is 18, so a tile side needs 37 pixels.
DEEP = compact(scale=2, num_conv=16, num_feat=8)
FP32 = {"backend": "torch", "precision": "fp32"}  # auto is bf16 on CPUs that have it


@pytest.fixture
def deep_model(make_checkpoint):
    return make_checkpoint(DEEP, name="deep compact")


def _whole_frame(path, frames: np.ndarray) -> np.ndarray:
    network = load_model(path).network
    with torch.no_grad():
        return network(torch.from_numpy(frames[None])).numpy()[0]


def test_explicit_tile_covering_the_frame_is_the_automatic_one(deep_model):
    frames = random_rgb(1, 24, 32, seed=2310)
    clip = clip_from_arrays(frames, vs.RGBS)
    explicit = frame_array(upscale(clip, deep_model, tile=[32, 24], **FP32).get_frame(0))
    automatic = frame_array(upscale(clip, deep_model, **FP32).get_frame(0))
    np.testing.assert_array_equal(explicit, automatic)
    np.testing.assert_allclose(explicit, _whole_frame(deep_model, frames[0]), atol=1e-5)


def test_a_tile_shorter_than_the_frame_is_refused_naming_the_overlap(deep_model):
    frames = random_rgb(1, 48, 64, seed=2311)
    clip = clip_from_arrays(frames, vs.RGBS)
    with pytest.raises(vs.Error, match=r"upscale: tile 32 is smaller than 2 x overlap \+ 1 "
                                       r"= 37; use a larger tile \(at least 37, or the whole "
                                       r"frame, 64 pixels wide\), or pass overlap=15 or less"):
        upscale(clip, deep_model, tile=[32, 24], **FP32)
    # The suggested overlap is taken (the height, 24 of 48, needs overlap 11 or less).
    tiled = upscale(clip, deep_model, tile=[32, 24], overlap=11, **FP32)
    assert frame_array(tiled.get_frame(0)).shape == (3, 96, 128)


def test_a_package_tile_follows_the_same_rule(deep_model, tmp_path, capsys):
    from vs_coreml_esrgan.cli import main as cli

    package = tmp_path / "deep 32x24.mlpackage"
    assert cli(["convert", str(deep_model), "-o", str(package), "--tile", "32x24",
                "--precision", "fp32"]) == 0
    err = capsys.readouterr().err
    assert ("tile 32x24 is smaller than 2 x overlap + 1 = 37" in err
            and "larger ones only with overlap=11 or less" in err)
    small = clip_from_arrays(random_rgb(1, 24, 32, seed=2312), vs.RGBS)
    got = frame_array(upscale(small, str(package), backend="mil").get_frame(0))
    expected = frame_array(upscale(small, deep_model, **FP32).get_frame(0))
    np.testing.assert_allclose(got, expected, atol=1e-4)
    large = clip_from_arrays(random_rgb(1, 48, 64, seed=2313), vs.RGBS)
    with pytest.raises(vs.Error, match=r"tile 32 is smaller than 2 x overlap \+ 1 = 37; "
                                       r"convert the model again with a larger --tile .* "
                                       r"or pass overlap=15 or less"):
        upscale(large, str(package), backend="mil")
    tiled = upscale(large, str(package), backend="mil", overlap=11)
    assert frame_array(tiled.get_frame(0)).shape == (3, 96, 128)


def test_random_network_is_deep_enough():
    """The premise of these tests: the default overlap is 18 (16 + 2 convolutions)."""
    from vs_coreml_esrgan.architectures import build_network

    spec, _ = build_network(random_network(DEEP).state_dict())
    assert spec.default_overlap == 18
