"""Shared test helpers: small random-weight checkpoints in Real-ESRGAN's own key layout."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import vapoursynth as vs

from vs_coreml_esrgan.network_spec import NetworkSpec
from vs_coreml_esrgan.networks import build_network

MakeCheckpoint = Callable[..., Path]

# The video tests read real files through a source filter; vapoursynth-bestsource has no
# macOS wheel, so on a Mac without one installed another way they cannot run.
needs_source_filter = pytest.mark.skipif(
    sys.platform == "darwin" and not hasattr(vs.core, "bs"),
    reason="needs the bestsource source filter (vapoursynth-bestsource; no macOS wheel)")


def random_network(spec: NetworkSpec, seed: int = 0, std: float = 0.1) -> torch.nn.Module:
    """A network with spread-out random weights, so tests see non-trivial outputs."""
    torch.manual_seed(seed)
    network = build_network(spec)
    with torch.no_grad():
        for name, parameter in network.named_parameters():
            if name.endswith("bias"):
                parameter.uniform_(-0.05, 0.05)
            elif parameter.ndim == 1:  # PReLU slopes
                parameter.uniform_(0.0, 0.3)
            else:
                parameter.normal_(0.0, std)
    return network


@pytest.fixture(autouse=True)
def _cpu_defaults_on_macos(monkeypatch):
    """The numbers in these tests are checked against float32 PyTorch on the CPU. On a Mac
    backend 'auto' means Core ML (float16) and the torch device MPS; tests that want those
    ask for them by name, the rest get what 'auto' means elsewhere."""
    if sys.platform != "darwin":
        return

    def off_mac_choice(backend: str, is_package: bool) -> str:
        if backend != "auto":
            return backend
        return "mil" if is_package else "torch"

    monkeypatch.setattr("vs_coreml_esrgan.filter._choose_backend", off_mac_choice)
    monkeypatch.setattr("vs_coreml_esrgan.backends.torch_backend.default_device",
                        lambda: "cpu")


@pytest.fixture
def make_checkpoint(tmp_path: Path) -> MakeCheckpoint:
    """Save a random ``spec`` network as Real-ESRGAN does and return the file's path.

    ``wrapper`` is the dict key holding the tensors ('params_ema' as in RealESRGAN_x4plus,
    'params' as in the compact models, None for a bare state dict); ``suffix`` '.pth' or
    '.safetensors'.
    """

    def make(spec: NetworkSpec, *, wrapper: str | None = "params_ema", suffix: str = ".pth",
             seed: int = 0, name: str = "model") -> Path:
        state = random_network(spec, seed).state_dict()
        path = tmp_path / f"{name}{suffix}"
        if suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in state.items()}, path)
        else:
            torch.save(state if wrapper is None else {wrapper: state}, path)
        return path

    return make


def compact(scale: int = 4, num_conv: int = 4, num_feat: int = 8, act_type: str = "prelu"
            ) -> NetworkSpec:
    return NetworkSpec(arch="srvgg", scale=scale, num_conv=num_conv, num_feat=num_feat,
                       act_type=act_type)


def rrdb(scale: int = 4, num_block: int = 2, num_feat: int = 8, num_grow_ch: int = 4
         ) -> NetworkSpec:
    return NetworkSpec(arch="rrdbnet", scale=scale, num_block=num_block, num_feat=num_feat,
                       num_grow_ch=num_grow_ch)
