"""SRVGGNetCompact: the small Real-ESRGAN network (realesr-animevideov3, realesr-general-x4v3).

A plain stack of 3x3 convolutions at the input resolution, a pixel shuffle to the output
resolution, and a nearest-neighbour upscale of the input added as a residual. Loading and
running use spandrel's Compact module; this one, with the same parameter names and
hyperparameters, is what Core ML conversion starts from.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class SRVGGNetCompact(nn.Module):
    """Input (N, C, H, W) in [0, 1]; output (N, C, H * scale, W * scale), not clamped.

    Parameter names follow Real-ESRGAN's checkpoints: ``body.{2i}`` are convolutions,
    ``body.{2i+1}`` activations (weights only for PReLU).
    """

    def __init__(self, *, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64,
                 num_conv: int = 16, upscale: int = 4, act_type: str = "prelu") -> None:
        super().__init__()
        self.scale = self.body_scale = upscale
        layers: list[nn.Module] = [nn.Conv2d(num_in_ch, num_feat, 3, padding=1),
                                   _activation(act_type, num_feat)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, padding=1),
                       _activation(act_type, num_feat)]
        layers.append(nn.Conv2d(num_feat, num_out_ch * upscale ** 2, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.pixel_shuffle(self.body(x), self.body_scale)
        return out + F.interpolate(x, scale_factor=self.body_scale, mode="nearest")


def _activation(kind: str, channels: int) -> nn.Module:
    if kind == "prelu":
        return nn.PReLU(num_parameters=channels)
    if kind == "relu":
        return nn.ReLU(inplace=True)
    return nn.LeakyReLU(negative_slope=0.1, inplace=True)
