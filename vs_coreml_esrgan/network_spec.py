"""Network descriptions: which Real-ESRGAN architecture a set of weights is, and its sizes.

Detection reads only key names and tensor shapes, so it needs no deep-learning framework.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Arch = Literal["rrdbnet", "srvgg"]
Activation = Literal["prelu", "relu", "leakyrelu"]

ShapeMap = Mapping[str, tuple[int, ...]]


class ModelError(ValueError):
    """A model file or state dict that is not a supported Real-ESRGAN network."""


@dataclass(frozen=True, kw_only=True)
class NetworkSpec:
    """Hyperparameters of one Real-ESRGAN network.

    ``scale`` is the factor from the network's input image to its output image; for RRDBNet
    at scale 2 or 1 the input is pixel-unshuffled first, so width and height must be
    multiples of ``multiple_of``.
    """

    arch: Arch
    scale: int
    num_in_ch: int = 3
    num_out_ch: int = 3
    num_feat: int = 64
    num_block: int = 23  # RRDBNet: residual-in-residual dense blocks
    num_grow_ch: int = 32  # RRDBNet: channels added by each dense layer
    num_conv: int = 16  # SRVGGNetCompact: body convolutions
    act_type: Activation = "prelu"  # SRVGGNetCompact only
    # SRVGGNetCompact only: the body upscales by this factor and a bicubic resize brings
    # the result to ``scale`` (how some ncnn exports make x2 / x3 from an x4 network).
    bicubic_from: int | None = None

    @property
    def multiple_of(self) -> int:
        """Input width and height must be multiples of this (pixel-unshuffle factor)."""
        if self.arch == "rrdbnet":
            return 4 // self.scale
        return 1

    @property
    def receptive_radius(self) -> int | None:
        """Input pixels each output pixel can see on each side; None where it is unbounded
        for practical purposes (RRDBNet sees well over a hundred pixels)."""
        if self.arch == "srvgg":
            return self.num_conv + 2 + (1 if self.bicubic_from else 0)
        return None

    def describe(self) -> str:
        if self.arch == "srvgg":
            resize = f", bicubic from x{self.bicubic_from}" if self.bicubic_from else ""
            return (f"SRVGGNetCompact x{self.scale} (num_conv={self.num_conv}, "
                    f"num_feat={self.num_feat}, act={self.act_type}{resize})")
        return (f"RRDBNet x{self.scale} (num_block={self.num_block}, "
                f"num_feat={self.num_feat}, num_grow_ch={self.num_grow_ch})")


_OLD_ESRGAN_BODY = re.compile(r"^model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$")
_OLD_ESRGAN_TAIL = re.compile(r"^model\.(\d+)\.(weight|bias)$")
_INTERMEDIATE_BODY = re.compile(r"^RRDB_trunk\.(\d+)\.RDB(\d)\.conv(\d)\.(weight|bias)$")


def rename_legacy_keys(keys: list[str]) -> dict[str, str]:
    """Map legacy ESRGAN key names to the current (basicsr) RRDBNet names.

    Handles the original ESRGAN layout (``model.0.weight``, ``model.1.sub.N.RDBk.convj.0``,
    upsampling convolutions at ``model.3``, ``model.6``, ...) and the later one
    (``RRDB_trunk``, ``trunk_conv``, ``upconv1``, ``HRconv``). Returns ``{old: new}`` for
    every key; keys already in the current layout map to themselves.
    """
    if "model.0.weight" in keys:
        return _rename_sequential(keys)
    names = {"conv_first": "conv_first", "trunk_conv": "conv_body", "upconv1": "conv_up1",
             "upconv2": "conv_up2", "HRconv": "conv_hr", "conv_last": "conv_last"}
    mapping = {}
    for key in keys:
        body = _INTERMEDIATE_BODY.match(key)
        if body:
            block, rdb, conv, kind = body.groups()
            mapping[key] = f"body.{block}.rdb{rdb}.conv{conv}.{kind}"
            continue
        module, _, kind = key.partition(".")
        mapping[key] = f"{names[module]}.{kind}" if module in names else key
    return mapping


def _rename_sequential(keys: list[str]) -> dict[str, str]:
    tail_indices = sorted({int(m.group(1)) for k in keys if (m := _OLD_ESRGAN_TAIL.match(k))})
    # model.0 is conv_first; model.1.sub.N (N = last block index + 1) is conv_body; after it
    # come the upsampling convolutions and then conv_hr and conv_last, in index order.
    after_body = [i for i in tail_indices if i >= 2]
    if len(after_body) < 3:
        raise ModelError(f"old ESRGAN layout with too few tail convolutions: {after_body}")
    *ups, hr, last = after_body
    if len(ups) != 2:
        raise ModelError(
            f"old ESRGAN layout with {len(ups)} upsampling convolutions; only x4 "
            "(two) is supported")
    tail_names = {0: "conv_first", ups[0]: "conv_up1", ups[1]: "conv_up2", hr: "conv_hr",
                  last: "conv_last"}
    blocks = [int(m.group(1)) for k in keys if (m := _OLD_ESRGAN_BODY.match(k))]
    body_conv = f"model.1.sub.{max(blocks, default=-1) + 1}."
    mapping = {}
    for key in keys:
        if body := _OLD_ESRGAN_BODY.match(key):
            block, rdb, conv, kind = body.groups()
            mapping[key] = f"body.{block}.rdb{rdb}.conv{conv}.{kind}"
        elif key.startswith(body_conv):
            mapping[key] = "conv_body." + key.removeprefix(body_conv)
        elif (tail := _OLD_ESRGAN_TAIL.match(key)) and int(tail.group(1)) in tail_names:
            mapping[key] = f"{tail_names[int(tail.group(1))]}.{tail.group(2)}"
        else:
            mapping[key] = key
    return mapping


def detect_spec(shapes: ShapeMap, *, act_type: Activation | None = None) -> NetworkSpec:
    """Detect architecture and hyperparameters from a (current-layout) state dict's shapes.

    ``act_type`` overrides the SRVGGNetCompact activation; it is needed for ReLU versus
    LeakyReLU, which have no weights and so cannot be told apart (LeakyReLU is assumed).
    Raises ModelError naming what was found when the keys fit no known architecture.
    """
    if "conv_first.weight" in shapes and "conv_body.weight" in shapes:
        return _detect_rrdbnet(shapes)
    if "body.0.weight" in shapes and len(shapes["body.0.weight"]) == 4:
        return _detect_srvgg(shapes, act_type)
    sample = ", ".join(sorted(shapes)[:6]) or "no tensors"
    raise ModelError(
        "not a Real-ESRGAN RRDBNet or SRVGGNetCompact state dict: expected keys like "
        f"'conv_first.weight' / 'body.0.weight', found {sample}"
        + (" ..." if len(shapes) > 6 else ""))


def _detect_rrdbnet(shapes: ShapeMap) -> NetworkSpec:
    num_feat, num_in_ch = shapes["conv_first.weight"][:2]
    num_out_ch = _shape(shapes, "conv_last.weight")[0]
    blocks = {int(k.split(".")[1]) for k in shapes if k.startswith("body.")}
    if blocks != set(range(len(blocks))) or not blocks:
        raise ModelError(f"RRDBNet body blocks are not numbered 0..N-1: {sorted(blocks)}")
    num_grow_ch = _shape(shapes, "body.0.rdb1.conv1.weight")[0]
    unshuffle = math.isqrt(num_in_ch // num_out_ch)
    if unshuffle not in (1, 2, 4) or num_out_ch * unshuffle * unshuffle != num_in_ch:
        raise ModelError(
            f"RRDBNet with {num_in_ch} input and {num_out_ch} output channels: expected the "
            "input to be the output channels times 1, 4 or 16 (scale 4, 2 or 1)")
    for key in ("conv_up1.weight", "conv_up2.weight", "conv_hr.weight"):
        _shape(shapes, key)
    return NetworkSpec(arch="rrdbnet", scale=4 // unshuffle, num_in_ch=num_out_ch,
                       num_out_ch=num_out_ch, num_feat=num_feat, num_block=len(blocks),
                       num_grow_ch=num_grow_ch)


def _detect_srvgg(shapes: ShapeMap, act_type: Activation | None) -> NetworkSpec:
    num_feat, num_in_ch = shapes["body.0.weight"][:2]
    conv_indices = sorted(int(k.split(".")[1]) for k in shapes
                          if k.startswith("body.") and k.endswith(".weight")
                          and len(shapes[k]) == 4)
    last = conv_indices[-1]
    expected = list(range(0, last + 1, 2))
    if conv_indices != expected:
        raise ModelError(
            f"SRVGGNetCompact convolutions expected at body indices {expected}, found "
            f"{conv_indices}")
    has_prelu = "body.1.weight" in shapes
    if act_type is None:
        act_type = "prelu" if has_prelu else "leakyrelu"
    elif (act_type == "prelu") != has_prelu:
        raise ModelError(f"act_type={act_type!r} does not fit the weights "
                         f"({'with' if has_prelu else 'without'} PReLU parameters)")
    out_channels = shapes[f"body.{last}.weight"][0]
    num_out_ch = num_in_ch
    scale = math.isqrt(out_channels // num_out_ch)
    if scale < 1 or num_out_ch * scale * scale != out_channels:
        raise ModelError(
            f"SRVGGNetCompact last convolution has {out_channels} output channels: expected "
            f"{num_out_ch} x scale^2")
    return NetworkSpec(arch="srvgg", scale=scale, num_in_ch=num_in_ch, num_out_ch=num_out_ch,
                       num_feat=num_feat, num_conv=last // 2 - 1, act_type=act_type)


def _shape(shapes: ShapeMap, key: str) -> tuple[int, ...]:
    try:
        return shapes[key]
    except KeyError:
        raise ModelError(f"RRDBNet state dict is missing {key!r}") from None
