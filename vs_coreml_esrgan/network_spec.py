"""The network description the rest of the code uses: what a model computes (architecture,
scale, channels), which input sizes it accepts, and what it can run as.

Built from a checkpoint by ``architectures`` (through spandrel) or from an ncnn model by
``ncnn_import``; needs no deep-learning framework itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Activation = Literal["prelu", "relu", "leakyrelu"]
ACTIVATIONS: tuple[Activation, ...] = ("prelu", "relu", "leakyrelu")
Tiling = Literal["supported", "discouraged", "internal"]

# Overlap for networks whose receptive field is unknown, unbounded (normalisation over the
# whole tile) or too large to cover exactly: Real-ESRGAN's own inference pads tiles by 10,
# this project used 16 (plus an 8-pixel cross-fade) for RRDBNet from the start.
FALLBACK_OVERLAP = 16
# Receptive radii up to this are covered exactly by the default overlap (tiled == whole
# frame); larger ones fall back to FALLBACK_OVERLAP.
MAX_EXACT_OVERLAP = 32


class ModelError(ValueError):
    """A model file or state dict that is not a supported network."""


@dataclass(frozen=True, kw_only=True)
class NetworkSpec:
    """One network: input (N, num_in_ch, H, W) in [0, 1] → (N, num_out_ch, H*scale, W*scale).

    ``arch`` is spandrel's architecture id ('ESRGAN', 'Compact', 'SPAN', 'PLKSR', ...);
    ``tags`` its variant tags ('64nf', '23nb', 'unshuffle', 'Real', ...).
    Input width and height must be multiples of ``multiple_of``, at least ``minimum`` and,
    where ``square``, equal.
    ``receptive_radius``: input pixels each output pixel can see on each side, an upper
    bound; None where unknown or unbounded (normalisation over the whole input).
    ``coreml``: True where conversion to Core ML is tested to match (see the README table).
    ``bicubic_from``: Compact networks from ncnn whose body upscales by this factor and whose
    output is resized (bicubic) to ``scale``.
    """

    arch: str
    scale: int
    num_in_ch: int = 3
    num_out_ch: int = 3
    multiple_of: int = 1
    minimum: int = 0
    square: bool = False
    supports_half: bool = True
    supports_bfloat16: bool = True
    receptive_radius: int | None = None
    tiling: Tiling = "supported"
    coreml: bool = False
    tags: tuple[str, ...] = ()
    bicubic_from: int | None = None

    @property
    def default_overlap(self) -> int:
        """Context pixels per inner tile edge: the receptive radius where it is known and at
        most MAX_EXACT_OVERLAP (tiled output then equals whole-frame output), else
        FALLBACK_OVERLAP."""
        radius = self.receptive_radius
        if radius is not None and radius <= MAX_EXACT_OVERLAP:
            return radius
        return FALLBACK_OVERLAP

    @property
    def size_requirements(self) -> str:
        """'multiple of 4, at least 8' style summary ('any' when unconstrained)."""
        parts = []
        if self.multiple_of > 1:
            parts.append(f"multiple of {self.multiple_of}")
        if self.minimum > 0:
            parts.append(f"at least {self.minimum}")
        if self.square:
            parts.append("square")
        return ", ".join(parts) or "any"

    def describe(self) -> str:
        resize = f", bicubic from x{self.bicubic_from}" if self.bicubic_from else ""
        tags = ", ".join(self.tags)
        return f"{self.arch} x{self.scale}" + (f" ({tags}{resize})" if tags or resize else "")
