"""How much memory a network needs for a batch of tiles: impossible settings are refused
when the filter or a conversion is set up, not by an allocation failure on the first frame.

The estimate counts the float32 values alive at a network's peak per input pixel (its
widest feature maps, at the resolution they have), doubled for the runtime's copies and
workspace. Measured with peak RSS at tile 256 (PyTorch 2.14, CPU, eager): a 64-feature
compact x4 network grew by 96 MiB against 69 MiB counted, a 64-feature RRDBNet x4 by
862 MiB against 600 MiB; the first traced call grows more (490 MiB for the compact one).
It tells a usable tile from one that cannot fit, not the exact need; settings are refused
only above the machine's RAM.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

    from .coreml.package import PackageInfo
    from .network_spec import NetworkSpec

_FLOAT_BYTES = 4
_RUNTIME_FACTOR = 2  # copies and workspace beyond the counted feature maps (see above)
_WIDEST_FEATURES = 64  # Real-ESRGAN's networks use at most 64 feature channels


def activation_values(network: nn.Module, spec: NetworkSpec) -> int:
    """float32 values alive per input pixel at the network's peak: a layer's input and
    output (twice the widest tensor, measured by running the network once) and the
    network's output."""
    from .activations import widest_values_per_pixel

    return 2 * widest_values_per_pixel(network, spec) + spec.num_out_ch * spec.scale ** 2


def package_activation_values(info: PackageInfo) -> int:
    """The same for a converted package, from its recorded architecture (RRDBNet, the
    larger, where none is recorded)."""
    out = info.output_shape[1] * info.scale ** 2
    if info.metadata.get("arch") in ("srvgg", "Compact"):  # older packages say srvgg
        return 2 * _WIDEST_FEATURES + 3 * out + info.input_shape[1]
    return 2 * _WIDEST_FEATURES * info.scale ** 2 + 2 * out + 4 * _WIDEST_FEATURES


def estimate_bytes(tile: tuple[int, int], batch: int, values_per_pixel: int) -> int:
    """Bytes for one call on ``batch`` tiles of ``tile = (width, height)``."""
    return _RUNTIME_FACTOR * batch * tile[0] * tile[1] * values_per_pixel * _FLOAT_BYTES


def physical_memory() -> int | None:
    """The machine's RAM in bytes, None where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(tile: tuple[int, int], batch: int, values_per_pixel: int, *,
               hint: str = "use a smaller tile or batch") -> None:
    """Raise ValueError, ending in ``hint``, when a tile x batch would need more than the
    machine's memory."""
    needed = estimate_bytes(tile, batch, values_per_pixel)
    available = physical_memory()
    if available is not None and needed > available:
        raise ValueError(
            f"tile {tile[0]}x{tile[1]} with batch {batch} needs about {_size(needed)} for "
            f"the network, more than this machine's {_size(available)} of memory; {hint}")


def _size(count: int) -> str:
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"
