"""SRVGGNetCompact: the small Real-ESRGAN network (realesr-animevideov3, realesr-general-x4v3).

A plain stack of 3x3 convolutions at the input resolution, a pixel shuffle to the output
resolution, and a nearest-neighbour upscale of the input added as a residual.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..network_spec import NetworkSpec


class SRVGGNetCompact(nn.Module):
    """Input (N, C, H, W) in [0, 1]; output (N, C, H * scale, W * scale), not clamped.

    Parameter names follow Real-ESRGAN's checkpoints: ``body.{2i}`` are convolutions,
    ``body.{2i+1}`` activations (weights only for PReLU).
    """

    def __init__(self, spec: NetworkSpec) -> None:
        super().__init__()
        self.scale = spec.scale
        self.body_scale = spec.bicubic_from or spec.scale
        channels = spec.num_feat
        layers: list[nn.Module] = [nn.Conv2d(spec.num_in_ch, channels, 3, padding=1),
                                   _activation(spec.act_type, channels)]
        for _ in range(spec.num_conv):
            layers += [nn.Conv2d(channels, channels, 3, padding=1),
                       _activation(spec.act_type, channels)]
        layers.append(nn.Conv2d(channels, spec.num_out_ch * self.body_scale ** 2, 3,
                                padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.pixel_shuffle(self.body(x), self.body_scale)
        out = out + F.interpolate(x, scale_factor=self.body_scale, mode="nearest")
        if self.body_scale != self.scale:
            size = (x.shape[2] * self.scale, x.shape[3] * self.scale)
            out = F.interpolate(out, size=size, mode="bicubic", align_corners=False)
        return out


def _activation(kind: str, channels: int) -> nn.Module:
    if kind == "prelu":
        return nn.PReLU(num_parameters=channels)
    if kind == "relu":
        return nn.ReLU(inplace=True)
    return nn.LeakyReLU(negative_slope=0.1, inplace=True)
