"""PyTorch implementations of the two Real-ESRGAN architectures (needs the torch extra)."""

from __future__ import annotations

from torch import nn

from ..network_spec import NetworkSpec
from .rrdbnet import RRDBNet
from .srvgg import SRVGGNetCompact


def build_network(spec: NetworkSpec) -> nn.Module:
    """An untrained network with ``spec``'s architecture and sizes, in eval mode."""
    module = RRDBNet(spec) if spec.arch == "rrdbnet" else SRVGGNetCompact(spec)
    return module.eval()


__all__ = ["RRDBNet", "SRVGGNetCompact", "build_network"]
