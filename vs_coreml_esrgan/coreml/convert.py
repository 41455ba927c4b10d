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
from copy import deepcopy
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..cache import atomic_directory
from ..checkpoint import LoadedModel, model_sha256
from ..network_spec import ModelError, NetworkSpec
from ..networks import SRVGGNetCompact
from ..version import __version__
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
    """The network in the form that is converted (same function, ANE-safe graph).

    Raises ModelError for a network no Core ML program can express.
    """
    spec = model.spec
    if spec.bicubic_from:
        raise ModelError(f"{model.path}: {spec.describe()} ends in a bicubic resize, which "
                         "Core ML programs cannot express; convert the x4 model "
                         "(e.g. realesr-animevideov3) and downscale afterwards")
    if spec.arch == "Compact":
        return _CompactForExport(compact_network(model.network)).eval()
    return export_form(spec, model.network)


def compact_network(network: nn.Module) -> SRVGGNetCompact:
    """Our SRVGGNetCompact with the weights of spandrel's Compact module (same names)."""
    ours = SRVGGNetCompact(**network.hyperparameters)
    ours.load_state_dict(network.state_dict())
    return ours.eval()


def export_form(spec: NetworkSpec, network: nn.Module) -> nn.Module:
    """spandrel's module with what tracing at one fixed size cannot take rewritten:
    ESRGAN's pad-to-a-multiple and crop around its pixel-unshuffle (the tile is a multiple
    already), RealPLKSR's in-place partial convolution (an index scatter in Core ML; the
    split-and-concatenate form computes the same)."""
    if spec.arch == "ESRGAN" and network.shuffle_factor:
        return _UnshuffledEsrgan(network).eval()
    if spec.arch == "PLKSR":
        copy = deepcopy(network).eval()
        for module in copy.modules():
            partial = getattr(module, "lk", None)
            if type(partial).__name__ == "PLKConv2d":
                module.lk = _PartialConv(partial.conv, partial.idx)
        return copy
    return network.eval()


class _PartialConv(nn.Module):
    """Convolve the first ``channels`` channels, pass the rest (RealPLKSR's PLKConv2d)."""

    def __init__(self, conv: nn.Conv2d, channels: int) -> None:
        super().__init__()
        self.conv = conv
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x[:, :self.channels]), x[:, self.channels:]], 1)


class _UnshuffledEsrgan(nn.Module):
    """ESRGAN x2 / x1 (pixel-unshuffled input) for inputs that are multiples of its factor."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.model = network.model
        self.factor = network.shuffle_factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(F.pixel_unshuffle(x, self.factor))


def check_output(output: str | os.PathLike[str]) -> Path:
    """``output`` as a Path; ModelError unless it ends in .mlpackage (any case) and does not
    exist yet (nothing is overwritten). Callers check before any work starts."""
    output = Path(output)
    if output.suffix.lower() != ".mlpackage":
        raise ModelError(f"output must end in .mlpackage, got {output.name!r}")
    if os.path.lexists(output):
        raise ModelError(f"{output} already exists; remove it or choose another name")
    return output


def convert_model(model: LoadedModel, output: str | os.PathLike[str], *,
                  tile: tuple[int, int], batch: int = 1, precision: str = "fp16") -> Path:
    """Convert a loaded model to an ``.mlpackage`` at ``output`` (written atomically:
    a temporary name, then renamed). ``tile`` is (width, height).

    Raises ModelError for an impossible tile, precision or architecture, and when
    ``output`` exists (nothing is overwritten).
    """
    ct = import_coremltools()
    output = check_output(output)
    if precision not in PRECISIONS:
        raise ModelError(f"precision must be fp16 or fp32, got {precision!r}")
    spec = model.spec
    if precision == "fp16" and not spec.supports_half:
        raise ModelError(f"{model.path}: {spec.describe()} does not support half precision "
                         "(spandrel says so); convert with precision fp32 (a float32 package "
                         "runs on the GPU and CPU, not the Neural Engine)")
    width, height = tile
    multiple, minimum = spec.multiple_of, spec.minimum
    if (min(width, height) < max(1, minimum) or width % multiple or height % multiple
            or (spec.square and width != height) or batch < 1):
        raise ModelError(f"tile {width}x{height} and batch {batch}: expected positive sizes, "
                         f"for this model {spec.size_requirements}")
    network = exportable(model).float()
    example = torch.rand(batch, spec.num_in_ch, height, width)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # trace is deprecated, still works; tracer notes
            traced = torch.jit.trace(network, example)
    except Exception as exc:
        raise ModelError(f"{model.path}: {spec.describe()} cannot be traced for Core ML "
                         f"({type(exc).__name__}: {_first_line(exc)}); use backend 'torch'"
                         ) from None
    mlmodel = _convert_traced(ct, traced, example.shape, precision, model)
    metadata = {
        "arch": spec.arch, "scale": str(spec.scale), "tile": f"{width}x{height}",
        "overlap": str(spec.default_overlap),
        "batch": str(batch), "precision": precision, "network": spec.describe(),
        "source": model.path.name, "source_sha256": model_sha256(model.path),
        "version": __version__,
    }
    for key, value in metadata.items():
        mlmodel.user_defined_metadata[METADATA_PREFIX + key] = value
    mlmodel.short_description = f"{spec.describe()}, tile {width}x{height}"
    with atomic_directory(output) as temporary:  # keeps the .mlpackage name coremltools needs
        mlmodel.save(str(temporary))
    return output


def _convert_traced(ct, traced: torch.jit.ScriptModule, shape: torch.Size, precision: str,
                    model: LoadedModel):
    """coremltools' conversion; its failures become a ModelError naming the torch op."""
    dtype = np.float16 if precision == "fp16" else np.float32
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # progress bars, untested-torch notes
            return ct.convert(
                traced, convert_to="mlprogram",
                inputs=[ct.TensorType(name="input", shape=shape, dtype=dtype)],
                outputs=[ct.TensorType(name="output", dtype=dtype)],
                compute_precision=(ct.precision.FLOAT16 if precision == "fp16"
                                   else ct.precision.FLOAT32),
                minimum_deployment_target=ct.target.macOS13,
                skip_model_load=True)
    except Exception as exc:
        raise ModelError(f"{model.path}: {model.spec.describe()} does not convert to Core ML: "
                         f"{_failing_op(exc)}{type(exc).__name__}: {_first_line(exc)}; use "
                         "backend 'torch'") from None


def _failing_op(exc: BaseException) -> str:
    """'torch op aten::x at module/path: ' where coremltools' op loop was at, else ''."""
    node = None
    tb = exc.__traceback__
    while tb is not None:  # the innermost op loop's current node
        if tb.tb_frame.f_code.co_name == "convert_nodes":
            node = tb.tb_frame.f_locals.get("node", node)
        tb = tb.tb_next
    if node is None:
        return ""
    try:
        location = "/".join(node.get_scope_info()[0])
    except Exception:  # the scope is a nicety; the op kind is what matters
        location = ""
    return f"torch op {node.kind!r}" + (f" at {location}" if location else "") + ": "


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else "no message"
