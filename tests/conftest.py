"""Shared test helpers: small random-weight networks built with spandrel's own classes,
saved as community checkpoints are (Real-ESRGAN's key layout for ESRGAN x4 / x2plus / x1
unshuffle, the original ESRGAN layout for the rest)."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import vapoursynth as vs

MakeCheckpoint = Callable[..., Path]

# The video tests read real files through a source filter; vapoursynth-bestsource has no
# macOS wheel, so on a Mac without one installed another way they cannot run.
needs_source_filter = pytest.mark.skipif(
    sys.platform == "darwin" and not hasattr(vs.core, "bs"),
    reason="needs the bestsource source filter (vapoursynth-bestsource; no macOS wheel)")


@dataclass(frozen=True)
class Net:
    """A network to build: spandrel's architecture id, the scale a loader should detect, the
    constructor arguments of spandrel's class, and the key layout to save it in."""

    arch: str
    scale: int
    kwargs: dict = field(hash=False)
    layout: str = "spandrel"  # or "real-esrgan": basicsr's names (conv_first, body.N.rdbK)
    std: float = 0.1  # spread of the random weights

    @property
    def act_type(self) -> str:
        return self.kwargs.get("act_type", "prelu")

    @property
    def multiple_of(self) -> int:
        """spandrel asks multiples of 4 of every pixel-unshuffling ESRGAN (x2plus too)."""
        return 4 if self.kwargs.get("shuffle_factor") else 1

    def describe(self) -> str:
        args = ",".join(f"{k}={v}" for k, v in sorted(self.kwargs.items()))
        return f"{self.arch}-x{self.scale}-{self.layout}({args})"

    __str__ = describe

    def module(self) -> torch.nn.Module:
        """An untrained instance of spandrel's class, in eval mode."""
        from spandrel.architectures.Compact import Compact
        from spandrel.architectures.ESRGAN import ESRGAN
        from spandrel.architectures.PLKSR import RealPLKSR
        from spandrel.architectures.SPAN import SPAN

        classes = {"ESRGAN": ESRGAN, "Compact": Compact, "SPAN": SPAN, "PLKSR": RealPLKSR}
        return classes[self.arch](**self.kwargs).eval()


def random_network(net: Net, seed: int = 0, std: float | None = None) -> torch.nn.Module:
    """``net`` with spread-out random weights, so tests see non-trivial outputs."""
    torch.manual_seed(seed)
    network = net.module()
    std = net.std if std is None else std
    with torch.no_grad():
        for name, parameter in network.named_parameters():
            if name.endswith("bias"):
                parameter.uniform_(-0.05, 0.05)
            elif parameter.ndim == 1 and "norm" in name:  # normalisation scales
                parameter.uniform_(0.5, 1.5)
            elif parameter.ndim == 1:  # PReLU slopes
                parameter.uniform_(0.0, 0.3)
            else:
                parameter.normal_(0.0, std)
    return network


def real_esrgan_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """spandrel's ESRGAN keys (the original ``model.N`` layout) renamed to Real-ESRGAN's
    (``conv_first``, ``body.N.rdbK.convJ``, ``conv_body``, ``conv_up1`` ...), written out
    here from the two repositories' module names, for x4 bodies (two upsamplings)."""
    blocks = 1 + max(int(m.group(1)) for k in state
                     if (m := re.match(r"model\.1\.sub\.(\d+)\.RDB", k)))
    tail = {"model.0": "conv_first", f"model.1.sub.{blocks}": "conv_body",
            "model.3": "conv_up1", "model.6": "conv_up2", "model.8": "conv_hr",
            "model.10": "conv_last"}
    renamed = {}
    for key, value in state.items():
        module, kind = key.rsplit(".", 1)
        if body := re.fullmatch(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0", module):
            block, rdb, conv = body.groups()
            renamed[f"body.{block}.rdb{rdb}.conv{conv}.{kind}"] = value
        else:
            renamed[f"{tail[module]}.{kind}"] = value
    return renamed


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
    """Save a random ``net`` as community files are and return the file's path.

    ``wrapper`` is the dict key holding the tensors ('params_ema' as in RealESRGAN_x4plus,
    'params' as in the compact models, None for a bare state dict); ``suffix`` '.pth' or
    '.safetensors'.
    """

    def make(net: Net, *, wrapper: str | None = "params_ema", suffix: str = ".pth",
             seed: int = 0, name: str = "model") -> Path:
        state = random_network(net, seed).state_dict()
        if net.layout == "real-esrgan":
            state = real_esrgan_layout(state)
        path = tmp_path / f"{name}{suffix}"
        if suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in state.items()}, path)
        else:
            torch.save(state if wrapper is None else {wrapper: state}, path)
        return path

    return make


def compact(scale: int = 4, num_conv: int = 4, num_feat: int = 8, act_type: str = "prelu"
            ) -> Net:
    return Net("Compact", scale, dict(num_in_ch=3, num_out_ch=3, num_feat=num_feat,
                                      num_conv=num_conv, upscale=scale, act_type=act_type))


def rrdb(scale: int = 4, num_block: int = 1, num_feat: int = 8, *, layout: str | None = None,
         plus: bool = False) -> Net:
    """ESRGAN. Real-ESRGAN layout (the default for x4, x2, x1): an x4 body, x2 and x1 by
    pixel-unshuffling the input; original layout (the default for x8 and plus): plain
    upsamplings, x1 without any."""
    if layout is None:
        layout = "real-esrgan" if scale in (1, 2, 4) and not plus else "spandrel"
    if layout == "real-esrgan":
        shuffle = 4 // scale
        kwargs = dict(in_nc=3 * shuffle * shuffle, out_nc=3, num_filters=num_feat,
                      num_blocks=num_block, scale=4, shuffle_factor=shuffle if shuffle > 1
                      else None)
    else:
        kwargs = dict(in_nc=3, out_nc=3, num_filters=num_feat, num_blocks=num_block,
                      scale=scale, plus=plus)
    return Net("ESRGAN", scale, kwargs, layout)


def span(scale: int = 4, feature_channels: int = 8, std: float = 0.02) -> Net:
    return Net("SPAN", scale, dict(num_in_ch=3, num_out_ch=3,
                                   feature_channels=feature_channels, upscale=scale), std=std)


def realplksr(scale: int = 2, dim: int = 16, n_blocks: int = 2, kernel_size: int = 7,
              layer_norm: bool = True, std: float = 0.05) -> Net:
    return Net("PLKSR", scale, dict(dim=dim, n_blocks=n_blocks, upscaling_factor=scale,
                                    kernel_size=kernel_size, layer_norm=layer_norm), std=std)


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    """An empty user model directory (VS_COREML_ESRGAN_MODELS) for this test."""
    directory = tmp_path / "models"
    directory.mkdir()
    monkeypatch.setenv("VS_COREML_ESRGAN_MODELS", str(directory))
    return directory
