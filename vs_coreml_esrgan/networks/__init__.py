"""Our own PyTorch forms of networks, where conversion needs them (needs the torch extra).

Every network is loaded and run as spandrel builds it; SRVGGNetCompact is kept here as
the module the Core ML converter rewrites for the Neural Engine.
"""

from __future__ import annotations

from .srvgg import SRVGGNetCompact

__all__ = ["SRVGGNetCompact"]
