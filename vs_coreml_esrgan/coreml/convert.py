"""Checkpoint → Core ML ML Program, the way the Neural Engine wants it.

- fixed input shape ``(batch, 3, H, W)``: flexible shapes keep a model off the Neural Engine;
- TensorType input and output, values in [0, 1]: ImageType's scale/bias would change the
  value range, and clamping and rounding stay in the filter;
- float16 program with float16 I/O (the only precision the Neural Engine runs), or float32
  for comparison and CPU/GPU;
- SRVGGNetCompact's residual (a nearest-neighbour x``s`` upsample of the input, added at
  output resolution) is moved in front of the pixel shuffle, see ``_CompactForExport``.
  RRDBNet is exported as it is: its two x2 nearest upsamples are the factor the Neural
  Engine is reported to run (hollance/neural-engine lists only factors above 2 as falling
  off it), and its dense-block concatenations are along channels at one resolution;
  whether Core ML places them on the Neural Engine is measured on the user's Mac (compute
  units 'auto', ``vs-coreml-esrgan doctor``), not assumed here.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .. import __version__
from ..cache import atomic_directory
from ..checkpoint import LoadedModel, model_sha256
from ..network_spec import ModelError
from .package import METADATA_PREFIX, import_coremltools

PRECISIONS = ("fp16", "fp32")


class _CompactForExport(nn.Module):
    """SRVGGNetCompact, same function, with no upsample and no add at output resolution.

    ``pixel_shuffle(body(x), s) + upsample_nearest(x, s)`` equals
    ``pixel_shuffle(body(x) + r(x), s)`` where ``r`` repeats each input channel ``s * s``
    times (channel ``c * s * s + k`` of ``r(x)`` is channel ``c`` of ``x``): the shuffle
    sends those ``s * s`` copies to the ``s x s`` output pixels the upsample would fill.
    ``r`` is a 1x1 convolution with 0/1 weights, exact in float16. Why: an upsample by
    more than 2 and a full-resolution add are the parts of this graph reported to fall off
    the Neural Engine (hollance/neural-engine); a convolution and an add at the input
    resolution are what it runs. (Earlier versions also split the last convolution's bias
    off before the shuffle because of a report that a biased convolution feeding
    pixel_shuffle computes wrong results there; no source for that report could be found,
    and here an add stands between them anyway.)
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.body = network.body
        self.scale = network.body_scale
        channels = self.body[0].in_channels
        repeat = torch.zeros(channels * self.scale ** 2, channels, 1, 1)
        for c in range(channels):
            repeat[c * self.scale ** 2:(c + 1) * self.scale ** 2, c] = 1.0
        self.register_buffer("repeat", repeat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.body(x) + F.conv2d(x, self.repeat), self.scale)


def exportable(model: LoadedModel) -> nn.Module:
    """The network in the form that is converted (same function, ANE-safe graph)."""
    spec = model.spec
    if spec.arch == "srvgg" and spec.bicubic_from:
        raise ModelError(f"{model.path}: {spec.describe()} ends in a bicubic resize, which "
                         "Core ML programs cannot express; convert the x4 model "
                         "(e.g. realesr-animevideov3) and downscale afterwards")
    if spec.arch == "srvgg":
        return _CompactForExport(model.network).eval()
    return model.network.eval()


def convert_model(model: LoadedModel, output: str | os.PathLike[str], *,
                  tile: tuple[int, int], batch: int = 1, precision: str = "fp16") -> Path:
    """Convert a loaded model to an ``.mlpackage`` at ``output`` (written atomically:
    a temporary name, then renamed). ``tile`` is (width, height).

    Raises ModelError for an impossible tile, precision or architecture, and when
    ``output`` exists (nothing is overwritten).
    """
    ct = import_coremltools()
    output = Path(output)
    if output.suffix != ".mlpackage":
        raise ModelError(f"output must end in .mlpackage, got {output.name}")
    if output.exists():
        raise ModelError(f"{output} already exists; remove it or choose another name")
    if precision not in PRECISIONS:
        raise ModelError(f"precision must be fp16 or fp32, got {precision!r}")
    width, height = tile
    multiple = model.spec.multiple_of
    if width < 1 or height < 1 or width % multiple or height % multiple or batch < 1:
        raise ModelError(f"tile {width}x{height} and batch {batch}: expected positive sizes, "
                         f"multiples of {multiple} for this model")
    network = exportable(model).float()
    example = torch.rand(batch, model.spec.num_in_ch, height, width)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # trace is deprecated, still works
        traced = torch.jit.trace(network, example)
    dtype = np.float16 if precision == "fp16" else np.float32
    with contextlib.redirect_stderr(io.StringIO()):  # progress bars, untested-torch notes
        mlmodel = ct.convert(
            traced, convert_to="mlprogram",
            inputs=[ct.TensorType(name="input", shape=example.shape, dtype=dtype)],
            outputs=[ct.TensorType(name="output", dtype=dtype)],
            compute_precision=(ct.precision.FLOAT16 if precision == "fp16"
                               else ct.precision.FLOAT32),
            minimum_deployment_target=ct.target.macOS13,
            skip_model_load=True)
    spec = model.spec
    metadata = {
        "arch": spec.arch, "scale": str(spec.scale), "tile": f"{width}x{height}",
        "batch": str(batch), "precision": precision, "network": spec.describe(),
        "source": model.path.name, "source_sha256": model_sha256(model.path),
        "version": __version__,
    }
    for key, value in metadata.items():
        mlmodel.user_defined_metadata[METADATA_PREFIX + key] = value
    mlmodel.short_description = f"Real-ESRGAN {spec.describe()}, tile {width}x{height}"
    with atomic_directory(output) as temporary:  # keeps the .mlpackage name coremltools needs
        mlmodel.save(str(temporary))
    return output
