"""A portable executor for saved ML Programs: the executable specification of what Core ML
will run, on any machine.

Reads a ``.mlpackage``'s MIL program and weight blob and runs the ``main`` function's
operations in order with PyTorch on the CPU. Values the program types as float16 are
rounded to float16 after every operation (Core ML stores them so); arithmetic runs in
float32. Only the operations ESRGAN, Compact, SPAN and RealPLKSR networks convert to are
implemented; any other is a ModelError naming it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from ..network_spec import ModelError
from .package import PackageInfo, blob_reader, load_spec, read_blob, read_package

Value = Any  # torch.Tensor, or a Python scalar / list / string for parameters
_FP16, _FP32 = 10, 11  # MIL DataType enum values
_BYTES_DTYPES = {_FP16: np.float16, _FP32: np.float32, 1: np.bool_, 21: np.int8,
                 22: np.int16, 23: np.int32, 24: np.int64, 31: np.uint8, 32: np.uint16,
                 33: np.uint32}


@dataclass(frozen=True)
class _Op:
    type: str
    inputs: dict[str, list[str | Value]]  # variable names, or inline values
    outputs: tuple[str, ...]
    round_fp16: tuple[bool, ...]
    release: tuple[str, ...] = ()  # intermediate values no later operation reads


class MilProgram:
    """A loaded program. Call it with the input array; safe to call from several threads."""

    def __init__(self, info: PackageInfo, constants: dict[str, Value], ops: list[_Op],
                 output_name: str) -> None:
        self.info = info
        self._constants = constants
        self._ops = ops
        self._output = output_name

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MilProgram:
        """Read a package. Raises ModelError for a program this executor cannot run."""
        info = read_package(path)
        spec = load_spec(path)
        function = spec.mlProgram.functions.get("main")
        if function is None:
            raise ModelError(f"{path}: the ML Program has no 'main' function")
        block = function.block_specializations[function.opset]
        reader = blob_reader(path)
        constants: dict[str, Value] = {}
        ops = []
        for op in block.operations:
            if op.type == "const":
                constants[op.outputs[0].name] = _decode(op.attributes["val"], reader, path,
                                                        op.outputs[0].name)
                continue
            if op.type not in _KERNELS:
                raise ModelError(f"{path}: operation {op.type!r} ({op.outputs[0].name}) is not "
                                 f"supported by the portable executor; supported: "
                                 f"{', '.join(sorted(_KERNELS))}")
            inputs = {name: [a.name if a.WhichOneof("binding") == "name"
                             else _decode(a.value, reader, path) for a in arg.arguments]
                      for name, arg in op.inputs.items()}
            ops.append(_Op(op.type, inputs, tuple(o.name for o in op.outputs),
                           tuple(o.type.tensorType.dataType == _FP16 for o in op.outputs)))
        return cls(info, constants, _with_releases(ops, constants, block.outputs[0]),
                   block.outputs[0])

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        """Run on ``inputs`` of exactly the package's input shape and dtype; returns the
        output in the package's output dtype. Raises ValueError like Core ML would."""
        info = self.info
        if inputs.shape != info.input_shape or inputs.dtype != info.input_dtype:
            raise ValueError(f"expected input {info.input_shape} {info.input_dtype}, got "
                             f"{inputs.shape} {inputs.dtype}")
        env: dict[str, Value] = dict(self._constants)
        env[info.input_name] = torch.from_numpy(inputs.astype(np.float32))
        with torch.inference_mode():
            for op in self._ops:
                args = {name: [env[v] if isinstance(v, str) and v in env else v for v in values]
                        for name, values in op.inputs.items()}
                results = _KERNELS[op.type](args)
                if not isinstance(results, tuple):
                    results = (results,)
                for name, value, round_fp16 in zip(op.outputs, results, op.round_fp16,
                                                   strict=True):
                    env[name] = value.half().float() if round_fp16 else value
                for name in op.release:  # keeps memory at the live set, not every value
                    del env[name]
            return env[self._output].numpy().astype(info.output_dtype)


def _with_releases(ops: list[_Op], constants: dict[str, Value], output: str) -> list[_Op]:
    """Mark, on each operation, the intermediate values it is the last reader of."""
    last_use: dict[str, int] = {}
    for index, op in enumerate(ops):
        for values in op.inputs.values():
            for value in values:
                if isinstance(value, str) and value not in constants and value != output:
                    last_use[value] = index
    released: dict[int, list[str]] = {}
    for name, index in last_use.items():
        released.setdefault(index, []).append(name)
    return [replace(op, release=tuple(released.get(index, ())))
            for index, op in enumerate(ops)]


def _decode(value: Any, reader: Any, path: str | os.PathLike[str], name: str = "a value"
            ) -> Value:
    """A MIL Value: tensors become float32 torch tensors, parameters plain Python values."""
    tensor_type = value.type.tensorType
    dtype = tensor_type.dataType
    shape = [int(d.constant.size) for d in tensor_type.dimensions]
    kind = value.WhichOneof("value")
    if kind == "blobFileValue":
        data = read_blob(reader, dtype, value.blobFileValue.offset, path, name)
    else:
        tensor = value.immediateValue.tensor
        field = tensor.WhichOneof("value")
        if field == "strings":
            strings = list(tensor.strings.values)
            return strings[0] if not shape else strings
        if field == "bytes":
            if dtype not in _BYTES_DTYPES:
                raise ModelError(f"{path}: packed immediate value of data type {dtype}")
            data = np.frombuffer(tensor.bytes.values, _BYTES_DTYPES[dtype])
        elif field in ("floats", "ints", "bools", "longInts", "doubles"):
            data = np.asarray(list(getattr(tensor, field).values))
        else:
            raise ModelError(f"{path}: immediate value of kind {field!r} is not supported")
    if dtype in (_FP16, _FP32):
        return torch.from_numpy(data.astype(np.float32).reshape(shape))
    values = data.reshape(shape).tolist()
    return values


def _one(args: dict[str, list[Value]], name: str, default: Value = None) -> Value:
    return args[name][0] if name in args else default


def _conv(args: dict[str, list[Value]]) -> torch.Tensor:
    x, weight = _one(args, "x"), _one(args, "weight")
    groups = int(_one(args, "groups", 1))
    strides = _one(args, "strides", [1, 1])
    dilations = _one(args, "dilations", [1, 1])
    pad_type = _one(args, "pad_type", "valid")
    if pad_type == "custom":
        top, bottom, left, right = _one(args, "pad")
    elif pad_type == "valid":
        top = bottom = left = right = 0
    elif pad_type == "same" and list(strides) == [1, 1]:
        kh = (weight.shape[2] - 1) * dilations[0]
        kw = (weight.shape[3] - 1) * dilations[1]
        top, bottom, left, right = kh // 2, kh - kh // 2, kw // 2, kw - kw // 2
    else:
        raise ModelError(f"conv with pad_type {pad_type!r} and strides {strides} is not "
                         "supported by the portable executor")
    if (top, left) != (bottom, right):
        x = F.pad(x, (left, right, top, bottom))
        top = left = 0
    return F.conv2d(x, weight, _one(args, "bias"), stride=tuple(strides), padding=(top, left),
                    dilation=tuple(dilations), groups=groups)


def _upsample_nearest(args: dict[str, list[Value]]) -> torch.Tensor:
    x = _one(args, "x")
    scale = (float(_one(args, "scale_factor_height", 1.0)),
             float(_one(args, "scale_factor_width", 1.0)))
    return F.interpolate(x, scale_factor=scale, mode="nearest")


def _scalar(value: Value) -> float:
    return float(value.item() if isinstance(value, torch.Tensor) else value)


def _prelu(args: dict[str, list[Value]]) -> torch.Tensor:
    return F.prelu(_one(args, "x"), _one(args, "alpha").flatten())


def _cast(args: dict[str, list[Value]]) -> torch.Tensor:
    # Values are carried as float32; a cast to fp16 is the rounding the output flag does.
    return _one(args, "x").float()


def _ints(value: Value) -> list[int]:
    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.flatten().tolist()]
    return [int(v) for v in (value if isinstance(value, list | tuple) else [value])]


def _slice_by_index(args: dict[str, list[Value]]) -> torch.Tensor:
    x = _one(args, "x")
    rank = x.ndim
    begin, end = _ints(_one(args, "begin")), _ints(_one(args, "end"))
    stride = _ints(_one(args, "stride", [1] * rank))
    begin_mask = _one(args, "begin_mask", [False] * rank)
    end_mask = _one(args, "end_mask", [False] * rank)
    squeeze = _one(args, "squeeze_mask", [False] * rank)
    index = tuple(slice(None if begin_mask[i] else begin[i], None if end_mask[i] else end[i],
                        stride[i]) for i in range(rank))
    if any(s < 1 for s in stride):
        raise ModelError(f"slice_by_index with stride {stride} is not supported by the "
                         "portable executor")
    out = x[index]
    for axis in sorted((i for i in range(rank) if squeeze[i]), reverse=True):
        out = out.squeeze(axis)
    return out


def _reduce_mean(args: dict[str, list[Value]]) -> torch.Tensor:
    x = _one(args, "x")
    axes = _one(args, "axes")
    dims = list(range(x.ndim)) if axes is None else _ints(axes)
    return x.mean(dim=dims, keepdim=bool(_one(args, "keep_dims", False)))


def _batch_norm(args: dict[str, list[Value]]) -> torch.Tensor:
    x = _one(args, "x")
    shape = (1, -1) + (1,) * (x.ndim - 2)
    out = (x - _one(args, "mean").view(shape)) / torch.sqrt(
        _one(args, "variance").view(shape) + _scalar(_one(args, "epsilon", 1e-5)))
    if (gamma := _one(args, "gamma")) is not None:
        out = out * gamma.view(shape)
    if (beta := _one(args, "beta")) is not None:
        out = out + beta.view(shape)
    return out


_KERNELS: dict[str, Callable[[dict[str, list[Value]]], Any]] = {
    "conv": _conv,
    "add": lambda a: _one(a, "x") + _one(a, "y"),
    "sub": lambda a: _one(a, "x") - _one(a, "y"),
    "mul": lambda a: _one(a, "x") * _one(a, "y"),
    "real_div": lambda a: _one(a, "x") / _one(a, "y"),
    "relu": lambda a: F.relu(_one(a, "x")),
    "leaky_relu": lambda a: F.leaky_relu(_one(a, "x"), _scalar(_one(a, "alpha"))),
    "prelu": _prelu,
    "clip": lambda a: _one(a, "x").clamp(_scalar(_one(a, "alpha")),
                                         _scalar(_one(a, "beta"))),
    "concat": lambda a: torch.cat(list(a["values"]), dim=int(_one(a, "axis"))),
    "upsample_nearest_neighbor": _upsample_nearest,
    "pixel_shuffle": lambda a: F.pixel_shuffle(_one(a, "x"), int(_one(a, "upscale_factor"))),
    "pixel_unshuffle": lambda a: F.pixel_unshuffle(_one(a, "x"),
                                                   int(_one(a, "downscale_factor"))),
    "cast": _cast,
    "identity": lambda a: _one(a, "x"),
    # SPAN
    "sigmoid": lambda a: torch.sigmoid(_one(a, "x")),
    "silu": lambda a: F.silu(_one(a, "x")),
    # RealPLKSR: Mish (softplus, tanh), normalisation, the repeated-input residual
    "tanh": lambda a: torch.tanh(_one(a, "x")),
    "softplus": lambda a: F.softplus(_one(a, "x")),
    "sqrt": lambda a: torch.sqrt(_one(a, "x")),
    "square": lambda a: _one(a, "x") * _one(a, "x"),
    "pow": lambda a: torch.pow(_one(a, "x"), _one(a, "y")),
    "reduce_mean": _reduce_mean,
    "batch_norm": _batch_norm,
    "reshape": lambda a: _one(a, "x").reshape(_ints(_one(a, "shape"))),
    "transpose": lambda a: _one(a, "x").permute(_ints(_one(a, "perm"))),
    "tile": lambda a: _one(a, "x").repeat(_ints(_one(a, "reps"))),
    "slice_by_index": _slice_by_index,
}
