"""Checkpoint → Core ML ML Program, the way the Neural Engine wants it.

- fixed input shape ``(batch, 3, H, W)``: flexible shapes keep a model off the Neural Engine;
- TensorType input and output, values in [0, 1]: ImageType's scale/bias would change the
  value range, and clamping and rounding stay in the filter;
- float16 program with float16 I/O (the only precision the Neural Engine runs), or float32
  for comparison and CPU/GPU;
- SRVGGNetCompact's last convolution has its bias split off into a separate add before
  the pixel shuffle: a convolution with bias feeding pixel_shuffle has computed wrong
  results on the Neural Engine on some macOS versions, and the conv-bias fusion pass is
  kept from folding it back.
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
    """SRVGGNetCompact with the last convolution's bias as a separate add."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        layers = list(network.body)
        self.features = nn.Sequential(*layers[:-1])
        last: nn.Conv2d = layers[-1]
        self.last_weight = nn.Parameter(last.weight.detach().clone(), requires_grad=False)
        self.register_buffer("last_bias", last.bias.detach().clone().view(1, -1, 1, 1))
        self.scale = network.body_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        body = F.conv2d(self.features(x), self.last_weight, None, padding=1) + self.last_bias
        out = F.pixel_shuffle(body, self.scale)
        return out + F.interpolate(x, scale_factor=self.scale, mode="nearest")


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
    pipeline = ct.PassPipeline.DEFAULT
    pipeline.remove_passes(["common::fuse_conv_bias"])
    with contextlib.redirect_stderr(io.StringIO()):  # progress bars, untested-torch notes
        mlmodel = ct.convert(
            traced, convert_to="mlprogram",
            inputs=[ct.TensorType(name="input", shape=example.shape, dtype=dtype)],
            outputs=[ct.TensorType(name="output", dtype=dtype)],
            compute_precision=(ct.precision.FLOAT16 if precision == "fp16"
                               else ct.precision.FLOAT32),
            minimum_deployment_target=ct.target.macOS13,
            pass_pipeline=pipeline, skip_model_load=True)
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
