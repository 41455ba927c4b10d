"""Tile sizes for Core ML packages converted on the fly: multiples of 16 (64, else 32, when
that costs at most 5 % more compute) and the largest float16 tensor within 256 MiB; the
smaller tile a failed Neural Engine compile is tried at."""

from __future__ import annotations

import math

import pytest
import vapoursynth as vs
from conftest import compact, random_network, real_esrgan_layout, rrdb

from vs_coreml_esrgan import upscale
from vs_coreml_esrgan.architectures import build_network
from vs_coreml_esrgan.coreml.package import read_package
from vs_coreml_esrgan.coreml.tile_rule import (
    activation_bytes_per_pixel,
    coreml_tile_size,
    largest_tile_side,
)
from vs_coreml_esrgan.network_spec import NetworkSpec
from vs_coreml_esrgan.tiling import plan_tiles

BUDGET = 256 * 2**20
_BUILT: dict = {}


def _build(net):
    """(network, description) as a loader builds them from the saved weights."""
    if net.describe() not in _BUILT:
        state = random_network(net).state_dict()
        if net.layout == "real-esrgan":
            state = real_esrgan_layout(state)
        spec, network = build_network(state)
        _BUILT[net.describe()] = (network, spec)
    return _BUILT[net.describe()]


# The official shapes (blocks do not change tensor sizes, so 2 stand for 23).
X4PLUS = rrdb(4, num_block=2, num_feat=64)
X2PLUS = rrdb(2, num_block=2, num_feat=64)
ANIMEVIDEOV3 = compact(4, num_conv=16, num_feat=64)


def _net(net):
    return _build(net)[0]


def _spec(net):
    return _build(net)[1]


def test_activation_sizes_by_hand():
    # x4plus: 64 channels at 4x the size, 2 bytes: 64 * 16 * 2 per input pixel.
    assert activation_bytes_per_pixel(_net(X4PLUS), _spec(X4PLUS)) == 2048
    # 512 x 512 would need 512 MiB; the largest multiple of 16 within 256 MiB is 352.
    assert 2048 * 512 * 512 == 512 * 2**20
    assert largest_tile_side(_net(X4PLUS), _spec(X4PLUS)) == 352 == 16 * (
        math.isqrt(BUDGET // 2048) // 16)
    # The compact net: 64 features (3 x 16 output channels) at the input size.
    assert activation_bytes_per_pixel(_net(ANIMEVIDEOV3), _spec(ANIMEVIDEOV3)) == 128
    assert largest_tile_side(_net(ANIMEVIDEOV3), _spec(ANIMEVIDEOV3)) == 512  # the usual maximum
    # x2plus: 64 channels at the output size (2x), 192 in the dense blocks at half size.
    assert activation_bytes_per_pixel(_net(X2PLUS), _spec(X2PLUS)) == 2 * 64 * 4


@pytest.mark.parametrize("net", [X4PLUS, X2PLUS, ANIMEVIDEOV3], ids=["x4plus", "x2plus",
                                                                   "compact"])
@pytest.mark.parametrize("size", [(1920, 1080), (1280, 720), (720, 480), (640, 360),
                                  (321, 179), (41, 29)])
def test_tiles_are_multiples_of_16_within_the_budget(net, size):
    spec = _spec(net)
    tile = coreml_tile_size(*size, 16, _net(net), spec)
    assert tile[0] % 16 == 0 and tile[1] % 16 == 0
    assert tile[0] % spec.multiple_of == 0 and tile[1] % spec.multiple_of == 0
    assert activation_bytes_per_pixel(_net(net), spec) * tile[0] * tile[1] <= BUDGET
    plan_tiles(*size, tile, 16, spec.scale)  # a valid plan for this frame


def test_multiples_of_64_when_they_cost_little():
    # 1840 wide in 4 tiles needs 490 pixels each: 496 (16) or 512 (64), 3.2 % more.
    assert coreml_tile_size(1840, 512, 16, _net(ANIMEVIDEOV3), _spec(ANIMEVIDEOV3)) == (512, 512)
    # 1000 wide in 3 tiles needs 360: 368 (16) or 384 (64), 4.3 % more, with 700 high
    # in 2 tiles needing 370: 384 either way.
    assert coreml_tile_size(1000, 700, 16, _net(ANIMEVIDEOV3), _spec(ANIMEVIDEOV3)) == (384, 384)
    # 1280x720: 454 x 380 needed; 512 x 384 computes 10 % more than 464 x 384 (waste 1.28
    # vs 1.16), too much; the multiple of 32, 480 x 384, 3.4 % more (1.20): taken.
    assert coreml_tile_size(1280, 720, 16, _net(ANIMEVIDEOV3), _spec(ANIMEVIDEOV3)) == (480, 384)
    assert plan_tiles(1280, 720, (480, 384), 16, 4).compute_waste <= 1.05 * plan_tiles(
        1280, 720, (464, 384), 16, 4).compute_waste < plan_tiles(
        1280, 720, (512, 384), 16, 4).compute_waste / 1.05


def test_smaller_tile_halves_the_area_within_the_rule():
    from vs_coreml_esrgan.coreml.tile_rule import smaller_tile

    spec = _spec(X4PLUS)
    # 352 / sqrt 2 = 248.9: 224 (a multiple of 32); about 40 % of the area.
    assert smaller_tile((352, 352), 16, spec) == (224, 224)
    # 480 x 384 -> 339.4 x 271.5: 320 x 256.
    assert smaller_tile((480, 384), 16, _spec(ANIMEVIDEOV3)) == (320, 256)
    # 40 / sqrt 2 = 28.3: no multiple of 32 holds 2 x 7 + 1 = 15 pixels, 16 does.
    assert smaller_tile((40, 40), 7, _spec(ANIMEVIDEOV3)) == (16, 16)
    # Nothing smaller holds 2 x 16 + 1 pixels.
    assert smaller_tile((48, 48), 16, _spec(ANIMEVIDEOV3)) is None
    square = NetworkSpec(arch="Square", scale=2, multiple_of=8, square=True)
    assert smaller_tile((480, 384), 4, square) == (256, 256)


def test_the_filter_converts_for_the_rule(make_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("VS_COREML_ESRGAN_CACHE", str(tmp_path / "cache"))
    checkpoint = make_checkpoint(compact(scale=2, num_conv=2))
    clip = vs.core.std.BlankClip(format=vs.RGBS, width=50, height=30)
    assert upscale(clip, checkpoint, backend="mil", overlap=4).get_frame(0).width == 100
    (package,) = (tmp_path / "cache" / "packages").glob("*/model.mlpackage")
    assert read_package(package).tile == (64, 32)


def test_functional_tensors_count_too():
    """The widest tensor here is made by torch.cat on an upsample, not by a module."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Wide(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(24, 3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            up = F.interpolate(x, scale_factor=4, mode="nearest")
            return self.conv(torch.cat([up] * 8, 1))

    spec = NetworkSpec(arch="Compact", scale=4)
    assert activation_bytes_per_pixel(Wide(), spec) == 2 * 24 * 16
