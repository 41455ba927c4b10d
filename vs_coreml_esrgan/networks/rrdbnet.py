"""RRDBNet: the large Real-ESRGAN network (RealESRGAN_x4plus, x2plus, anime_6B).

Residual-in-residual dense blocks at the input resolution, then two nearest-neighbour x2
upsamplings each followed by a convolution. Scales 2 and 1 pixel-unshuffle the input first
(so the body always upsamples x4), as RealESRGAN_x2plus does.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..network_spec import NetworkSpec

_RESIDUAL_SCALE = 0.2
_SLOPE = 0.2


class _DenseBlock(nn.Module):
    """Five convolutions, each seeing the block input and every earlier output."""

    def __init__(self, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        for i in range(5):
            out_ch = num_feat if i == 4 else num_grow_ch
            self.add_module(f"conv{i + 1}", nn.Conv2d(num_feat + i * num_grow_ch, out_ch, 3,
                                                      padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        convs = [self.conv1, self.conv2, self.conv3, self.conv4]
        for conv in convs:
            features.append(F.leaky_relu(conv(torch.cat(features, 1)), _SLOPE))
        return self.conv5(torch.cat(features, 1)) * _RESIDUAL_SCALE + x


class _RRDB(nn.Module):
    def __init__(self, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        self.rdb1 = _DenseBlock(num_feat, num_grow_ch)
        self.rdb2 = _DenseBlock(num_feat, num_grow_ch)
        self.rdb3 = _DenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * _RESIDUAL_SCALE + x


class RRDBNet(nn.Module):
    """Input (N, C, H, W) in [0, 1], H and W multiples of ``4 // scale``; output
    (N, C, H * scale, W * scale), not clamped."""

    def __init__(self, spec: NetworkSpec) -> None:
        super().__init__()
        self.unshuffle = spec.multiple_of
        feat = spec.num_feat
        self.conv_first = nn.Conv2d(spec.num_in_ch * self.unshuffle ** 2, feat, 3, padding=1)
        self.body = nn.Sequential(*(_RRDB(feat, spec.num_grow_ch)
                                    for _ in range(spec.num_block)))
        self.conv_body = nn.Conv2d(feat, feat, 3, padding=1)
        self.conv_up1 = nn.Conv2d(feat, feat, 3, padding=1)
        self.conv_up2 = nn.Conv2d(feat, feat, 3, padding=1)
        self.conv_hr = nn.Conv2d(feat, feat, 3, padding=1)
        self.conv_last = nn.Conv2d(feat, spec.num_out_ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for conv in (self.conv_up1, self.conv_up2):
            feat = F.leaky_relu(conv(F.interpolate(feat, scale_factor=2, mode="nearest")),
                                _SLOPE)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), _SLOPE))
