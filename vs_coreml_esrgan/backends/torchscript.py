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
    """sha256 of a network's structure (its repr: layer types and sizes) and of every
    tensor in its state dict (names, dtypes, shapes and bytes)."""
    digest = hashlib.sha256(repr(network).encode())
    for name, tensor in network.state_dict().items():
        value = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}".encode())
        digest.update(value.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _memory_format(x: torch.Tensor) -> str:
    return "channels_last" if x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous() else "contiguous"
