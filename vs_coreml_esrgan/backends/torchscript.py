"""Frozen TorchScript modules, one per distinct network and input, shared in the process.

TorchScript never frees what it traces or freezes: the graphs, with the frozen weights
inlined as constants, stay in its global compilation unit after the module is gone (about
30 MB for each trace of a 64-feature compact network, measured with RSS). Tracing once per
filter instance made every instance a leak; sharing the frozen module makes a second
filter on the same weights and tile shape cost nothing. Distinct networks still cost one
trace each, which is what TorchScript keeps anyway.

Frozen modules are safe to call from several threads at once (TorchScript's inference
contract), so sharing them across backends is safe.
"""

from __future__ import annotations

import hashlib
import threading
import warnings

import torch
from torch import nn

_shared: dict[tuple[str, tuple[int, ...], torch.dtype, str], torch.jit.ScriptModule] = {}
_lock = threading.Lock()


def frozen_module(network: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """``network`` traced on ``example``'s shape, dtype, device and memory format, and frozen
    (oneDNN then fuses layers). The same weights and structure give the same module."""
    key = (network_digest(network), tuple(example.shape), example.dtype,
           f"{example.device}/{_memory_format(example)}")
    with _lock:
        module = _shared.get(key)
        if module is None:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracing is deprecated, still supported
                traced = torch.jit.trace(network, example, check_trace=False)
                module = _shared[key] = torch.jit.freeze(traced.eval())
    return module


def network_digest(network: nn.Module) -> str:
    """sha256 of everything a network's computation depends on: its repr, every module's
    class and plain attributes (a resize factor, an activation's slope, a flag: what repr
    may not show) and every tensor in its state dict (names, dtypes, shapes and bytes).

    Two networks differing only in an attribute their repr leaves out (realesr-animevideov3
    x2 and x3: one body, resized to another scale) must not share a trace.
    """
    digest = hashlib.sha256(repr(network).encode())
    for name, module in network.named_modules():
        digest.update(f"\0{name}|{_attributes(module)}".encode())
    for name, tensor in network.state_dict().items():
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(_tensor_bytes(tensor))
    return digest.hexdigest()


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    return tensor.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes()


_PLAIN = (bool, int, float, complex, str, bytes, type(None), torch.dtype, torch.device,
          torch.Size)


def _attributes(module: nn.Module) -> str:
    """The module's class and its attributes that are not parameters, buffers, submodules
    or hooks, with their values where plain (numbers, text, tuples of them), else their
    types."""
    parts = [f"{type(module).__module__}.{type(module).__qualname__}"]
    for key, value in sorted(vars(module).items()):
        if key.startswith("_"):  # nn.Module's own bookkeeping
            continue
        parts.append(f"{key}={_plain(value)}")
    return ";".join(parts)


def _plain(value: object) -> str:
    if isinstance(value, _PLAIN):
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + ",".join(_plain(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k!r}:{_plain(v)}" for k, v in sorted(
            value.items(), key=lambda item: repr(item[0]))) + "}"
    if isinstance(value, torch.Tensor):  # a tensor attribute that is no buffer
        data = hashlib.sha256(_tensor_bytes(value)).hexdigest()
        return f"tensor{tuple(value.shape)}{value.dtype}:{data}"
    return type(value).__qualname__


def _memory_format(x: torch.Tensor) -> str:
    return "channels_last" if x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous() else "contiguous"
