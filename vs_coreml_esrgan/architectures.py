"""State dicts → network description and PyTorch module, through spandrel (needs the torch
extra).

spandrel detects the architecture from key names and shapes and builds its own module;
this module adds what the rest of the code needs to know about it (receptive field, whether
Core ML conversion is tested) and the one Real-ESRGAN variant spandrel does not detect:
Compact networks without PReLU weights (ReLU / LeakyReLU activations).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .network_spec import Activation, ModelError, NetworkSpec

# Architectures whose Core ML conversion is tested for parity on the portable executor
# (tests/test_architectures.py); a predicate on the variant tags where only some convert.
_COREML: dict[str, Callable[[tuple[str, ...]], bool]] = {
    "ESRGAN": lambda tags: True,
    "Compact": lambda tags: True,
    "SPAN": lambda tags: True,
    # RealPLKSR without DySample (its upsampler fails in the converter on a dynamic int,
    # tested); not PLKSR itself (untested).
    "PLKSR": lambda tags: "Real" in tags and "DySample" not in tags,
}


def build_network(state: Mapping[str, torch.Tensor], *, act_type: Activation | None = None
                  ) -> tuple[NetworkSpec, nn.Module]:
    """Detect the architecture of ``state`` and build it with these weights, in eval mode on
    the CPU in float32.

    ``state`` may be wrapped as community files are ('params_ema', 'params', 'state_dict',
    'module.' prefixes); spandrel unwraps it. ``act_type`` names a Compact network's
    activation, which its weights cannot tell for ReLU versus LeakyReLU: without it such
    a network is refused (the two compute different pictures). ESRGAN's growth channels
    are read from the weights (spandrel assumes 32). Raises ModelError (without a file
    name) when no architecture fits, the tensors do not fit the detected one, or the
    network does not take and give RGB (3 channels).
    """
    from spandrel import ImageModelDescriptor, canonicalize_state_dict

    state = canonicalize_state_dict(dict(state))
    if _is_plain_compact(state):
        if act_type is None:
            raise ModelError(_UNDECLARED_ACTIVATION)
        descriptor = _load_plain_compact(state, act_type)
    else:
        support = _detect(state)
        if act_type is not None and (support.architecture.id != "Compact"
                                     or act_type != "prelu"):
            raise ModelError(f"act_type={act_type!r} does not fit the weights (it applies to "
                             "Compact networks; PReLU is detected from its weights)")
        growth = esrgan_growth_channels(state) if support.architecture.id == "ESRGAN" else None
        with warnings.catch_warnings():
            # SwinIR, HAT and OmniSR build their position tables with torch.meshgrid
            # without `indexing`: torch's note on its future default is for their authors.
            warnings.filterwarnings("ignore", message=r"torch\.meshgrid",
                                    category=UserWarning)
            descriptor = (_load(support, state) if growth in (None, _SPANDREL_GROWTH)
                          else _load_esrgan_growth(support, state, growth))
    if not isinstance(descriptor, ImageModelDescriptor):
        raise ModelError(f"{descriptor.architecture.name} is an inpainting model (it needs a "
                         "mask); only image-to-image models can upscale video")
    spec = describe(descriptor)
    if (spec.num_in_ch, spec.num_out_ch) != (3, 3):
        raise ModelError(_channels_refusal(spec))
    network = descriptor.model.eval()
    network.requires_grad_(False)
    return spec, network


_UNDECLARED_ACTIVATION = (
    "a Compact network without PReLU weights: its weights cannot tell ReLU from LeakyReLU, "
    "and the two compute different pictures, so it is not guessed; declare it in the file: "
    "torch.save({'params': state_dict, 'act_type': 'relu'}, 'model.pth') (or 'leakyrelu'; "
    "a .safetensors file: metadata {'act_type': 'relu'}), or export it to ncnn, whose graph "
    "tells")
_SPANDREL_GROWTH = 32  # the growth channels spandrel's ESRGAN class builds


def _channels_refusal(spec: NetworkSpec) -> str:
    kinds = {1: "grayscale", 3: "RGB", 4: "RGBA"}
    given = " -> ".join(f"{n} ({kinds.get(n, 'channels')})"
                        for n in (spec.num_in_ch, spec.num_out_ch))
    return (f"{spec.describe()} takes and gives {given} channels; vs-coreml-esrgan runs "
            "networks of 3 channels in and out (every clip is converted to RGB and back): "
            "use an RGB model")


def esrgan_growth_channels(state: Mapping[str, torch.Tensor]) -> int | None:
    """The growth channels of an ESRGAN state dict (any key layout): the output channels
    of the first dense block's first convolution; None where there is none."""
    for key, tensor in state.items():
        if key.lower().endswith(("rdb1.conv1.0.weight", "rdb1.conv1.weight")) \
                and getattr(tensor, "ndim", 0) == 4:
            return int(tensor.shape[0])
    return None


def with_bicubic_resize(spec: NetworkSpec, network: nn.Module, scale: int
                        ) -> tuple[NetworkSpec, nn.Module]:
    """The network followed by a bicubic resize of its output to ``scale`` times the input
    (how some ncnn exports make x2 / x3 from an x4 Compact network)."""
    radius = spec.receptive_radius
    spec = replace(spec, scale=scale, bicubic_from=spec.scale, coreml=False,
                   receptive_radius=None if radius is None else radius + 1)
    return spec, _BicubicResized(network, scale).eval()


def describe(descriptor: Any) -> NetworkSpec:
    """The description of a loaded spandrel model descriptor."""
    arch = descriptor.architecture.id
    tags = tuple(descriptor.tags)
    size = descriptor.size_requirements
    return NetworkSpec(
        arch=arch, scale=descriptor.scale, num_in_ch=descriptor.input_channels,
        num_out_ch=descriptor.output_channels, multiple_of=size.multiple_of,
        minimum=size.minimum, square=size.square, supports_half=descriptor.supports_half,
        supports_bfloat16=descriptor.supports_bfloat16,
        receptive_radius=receptive_radius(arch, getattr(descriptor.model, "hyperparameters",
                                                        {})),
        tiling=descriptor.tiling.name.lower(), tags=tags,
        coreml=arch in _COREML and _COREML[arch](tags))


def receptive_radius(arch: str, hyper: Mapping[str, Any]) -> int | None:
    """An upper bound on the input pixels each output pixel sees, per side; None where it is
    not computed (normalisation over the whole input, attention, unknown architectures)."""
    if arch == "Compact":  # num_conv + 2 convolutions of 3x3 at the input resolution
        return int(hyper.get("num_conv", 16)) + 2
    if arch == "SPAN":  # 1 + 6 blocks x 3 + 1 + 1 convolutions of 3x3, all before the shuffle
        return 21
    if arch == "ESRGAN":
        return _esrgan_radius(int(hyper.get("num_blocks", 23)), hyper.get("shuffle_factor"))
    return None


def _esrgan_radius(num_blocks: int, shuffle: int | None) -> int:
    # At the body's resolution: conv_first, 15 convolutions per block, conv_body. The
    # upsampling convolutions and the two at the output resolution add less than 2 more
    # body pixels together (each spans one pixel of a resolution 2^k times finer).
    body = 2 + 15 * num_blocks + 2
    factor = shuffle or 1
    # A body pixel is a factor x factor group of input pixels after pixel-unshuffle.
    return body * factor + factor - 1


def _detect(state: dict[str, Any]) -> Any:
    from spandrel import MAIN_REGISTRY

    for support in MAIN_REGISTRY.architectures("detection"):
        if support.detect(state):
            return support
    keys = sorted(state)
    sample = ", ".join(keys[:6]) or "no tensors"
    raise ModelError(
        "not an architecture spandrel knows (ESRGAN, Compact, SPAN, RealPLKSR, DAT, SwinIR, "
        f"... see `vs-coreml-esrgan models`): found keys {sample}"
        + (" ..." if len(keys) > 6 else ""))


def _load(support: Any, state: dict[str, Any]) -> Any:
    name = support.architecture.name
    try:
        return support.architecture.load(state)
    except RuntimeError as exc:  # load_state_dict: missing, unexpected or mis-shaped tensors
        detail = str(exc).split("\n", 1)[-1].strip()
        raise ModelError(f"tensors do not fit {name}: {detail[:400]}") from None
    except Exception as exc:  # spandrel's hyperparameter deduction on odd files
        raise ModelError(f"looks like {name}, but spandrel could not build it "
                         f"({type(exc).__name__}: {str(exc)[:200]})") from None


def _load_esrgan_growth(support: Any, state: dict[str, Any], growth: int) -> Any:
    """ESRGAN with growth channels other than spandrel's 32: spandrel deduces the other
    hyperparameters from a stand-in of the same layout with 32 growth channels, and its
    dense blocks are then rebuilt with ``growth`` and given the real weights."""
    from spandrel.architectures.__arch_helpers import block
    from spandrel.architectures.ESRGAN import _to_old_arch

    old = _to_old_arch(state)
    filters = int(old["model.0.weight"].shape[0])
    stand_in = {key: _stand_in(key, value, filters) for key, value in old.items()}
    descriptor = _load(support, stand_in)
    model, plus = descriptor.model, "ESRGAN+" in descriptor.tags
    trunk = model.model[1].sub
    for index in range(len(trunk) - 1):  # the last is the trunk's closing convolution
        trunk[index] = block.RRDB(nf=filters, kernel_size=3, gc=growth, stride=1, bias=True,
                                  pad_type="zero", norm_type=None, act_type="leakyrelu",
                                  mode="CNA", plus=plus)
    try:
        model.load_state_dict(old, strict=True)
    except RuntimeError as exc:
        detail = str(exc).split("\n", 1)[-1].strip()
        raise ModelError(f"tensors do not fit {support.architecture.name} with {growth} "
                         f"growth channels: {detail[:400]}") from None
    descriptor.tags.append(f"{growth}gc")
    return descriptor


def _stand_in(key: str, value: Any, filters: int) -> Any:
    """A zero tensor shaped as ``key`` would be with 32 growth channels (dense-block
    tensors only; the rest as given)."""
    import re

    found = re.search(r"RDB\d\.conv(\d)\.0\.(weight|bias)$", key)
    if found is None:
        if key.endswith("conv1x1.weight"):  # ESRGAN+: filters -> growth, 1x1
            return torch.zeros(_SPANDREL_GROWTH, *value.shape[1:])
        return value
    conv = int(found.group(1))
    out = filters if conv == 5 else _SPANDREL_GROWTH
    if found.group(2) == "bias":
        return torch.zeros(out)
    return torch.zeros(out, filters + (conv - 1) * _SPANDREL_GROWTH, *value.shape[2:])


def _is_plain_compact(state: Mapping[str, Any]) -> bool:
    """Compact without PReLU: only convolutions at even ``body.N`` indices."""
    first = state.get("body.0.weight")
    if first is None or first.ndim != 4 or "body.1.weight" in state:
        return False
    indices = {int(key.split(".")[1]) for key in state if key.startswith("body.")
               and key.split(".")[1].isdigit()}
    return len(indices) >= 2 and indices == set(range(0, 2 * len(indices), 2)) \
        and all(key.startswith("body.") for key in state)


def _load_plain_compact(state: dict[str, Any], act_type: Activation) -> Any:
    from spandrel import ImageModelDescriptor
    from spandrel.architectures.Compact import Compact, CompactArch

    if act_type == "prelu":
        raise ModelError("act_type='prelu' does not fit the weights (a Compact network "
                         "without PReLU parameters)")
    last = max(int(key.split(".")[1]) for key in state)
    num_in_ch, last_out = state["body.0.weight"].shape[1], state[f"body.{last}.weight"].shape[0]
    scale = math.isqrt(last_out // num_in_ch)
    if scale < 1 or scale * scale * num_in_ch != last_out:
        raise ModelError(f"Compact last convolution has {last_out} output channels: expected "
                         f"{num_in_ch} x scale^2")
    num_feat = state["body.0.weight"].shape[0]
    num_conv = last // 2 - 1
    model = Compact(num_in_ch=num_in_ch, num_out_ch=num_in_ch, num_feat=num_feat,
                    num_conv=num_conv, upscale=scale, act_type=act_type)
    try:
        return ImageModelDescriptor(
            model, state, architecture=CompactArch(), purpose="SR" if scale > 1 else
            "Restoration", tags=[f"{num_feat}nf", f"{num_conv}nc", act_type],
            supports_half=True, supports_bfloat16=True, scale=scale, input_channels=num_in_ch,
            output_channels=num_in_ch)
    except RuntimeError as exc:
        detail = str(exc).split("\n", 1)[-1].strip()
        raise ModelError(f"tensors do not fit Compact ({act_type}): {detail[:400]}") from None


class _BicubicResized(nn.Module):
    def __init__(self, network: nn.Module, scale: int) -> None:
        super().__init__()
        self.network = network
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[2] * self.scale, x.shape[3] * self.scale)
        return F.interpolate(self.network(x), size=size, mode="bicubic", align_corners=False)
