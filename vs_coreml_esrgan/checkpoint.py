"""Checkpoint files → network description and weights (needs the torch extra)."""

from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .network_spec import ACTIVATIONS, Activation, ModelError, NetworkSpec

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .ncnn_import import NcnnNetwork

_EXPECTED = ("a checkpoint (.pth, .pt, .safetensors), an ncnn .param with its .bin beside it, "
             "or a converted .mlpackage")


@dataclass(frozen=True)
class LoadedModel:
    """A network with its weights loaded, in eval mode on the CPU in float32."""

    spec: NetworkSpec
    network: nn.Module
    path: Path


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read the tensors of a checkpoint, unwrapped as spandrel does (``params_ema``,
    ``params``, ``state_dict``, ... and ``module.`` prefixes).

    Accepts ``.pth`` / ``.pt`` / ``.ckpt`` (loaded with ``weights_only=True`` because a
    checkpoint is untrusted input) and ``.safetensors``. Raises ModelError naming the file
    for anything else.
    """
    return read_checkpoint(path)[0]


def read_checkpoint(path: str | os.PathLike[str]
                    ) -> tuple[dict[str, torch.Tensor], Activation | None]:
    """:func:`read_state_dict`'s tensors, and the activation the file declares: an
    ``act_type`` entry ('relu', 'leakyrelu' or 'prelu') beside the tensors of a ``.pth``
    or in a ``.safetensors`` file's metadata; None where it declares none."""
    path = Path(path)
    check_model_file(path)
    if path.suffix.lower() == ".safetensors":
        raw, declared = _read_safetensors(path), _safetensors_metadata(path).get("act_type")
    else:
        raw = _read_torch(path)
        declared = raw.get("act_type") if isinstance(raw, dict) else None
    import torch
    from spandrel import canonicalize_state_dict

    if isinstance(raw, dict):
        raw = canonicalize_state_dict(
            {k: v for k, v in raw.items() if not (k == "act_type" and isinstance(v, str))})
    if not isinstance(raw, dict) or not raw:
        raise ModelError(f"{path}: expected a dict of tensors, found {type(raw).__name__}"
                         + (" (empty)" if isinstance(raw, dict) else ""))
    tensors = {str(k): v for k, v in raw.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        found = ", ".join(f"{k}: {type(v).__name__}" for k, v in list(raw.items())[:5])
        raise ModelError(f"{path}: expected tensors, found {found}")
    if declared is not None and declared not in ACTIVATIONS:
        raise ModelError(f"{path}: act_type {declared!r} is not one of "
                         f"{', '.join(ACTIVATIONS)}")
    return tensors, declared


def load_model(path: str | os.PathLike[str], *, act_type: Activation | None = None
               ) -> LoadedModel:
    """Load a checkpoint (or an ncnn ``.param`` with its ``.bin``): detect its
    architecture (through spandrel), build the network, load the weights.

    ``act_type``: a Compact network's activation where its weights cannot tell (ReLU or
    LeakyReLU), as the file itself may declare it (:func:`read_checkpoint`); an ncnn graph
    tells it. A Compact network without PReLU weights whose activation nobody tells is
    refused rather than guessed. Raises ModelError naming the file when it is missing,
    unreadable, not a known architecture, or when its tensors do not fit the detected
    network.
    """
    path = Path(path)
    check_model_file(path)
    try:
        if path.suffix.lower() == ".param":
            ncnn, state = _read_ncnn(path)
        else:
            ncnn, (state, declared) = None, read_checkpoint(path)
            if declared is not None and act_type is not None and declared != act_type:
                raise ModelError(f"act_type={act_type!r} contradicts the file's own "
                                 f"act_type {declared!r}")
            act_type = act_type or declared
        check_finite(state, path)
        spec, network = _build(state, ncnn, act_type)
    except ModelError as exc:
        message = str(exc)  # the readers name the file already; detection does not
        named = str(path) in message or repr(str(path)) in message
        raise ModelError(message if named else f"{path}: {message}") from None
    return LoadedModel(spec=spec, network=network, path=path)


def check_model_file(path: Path) -> None:
    """ModelError unless ``path`` is a regular file (a symlink to one included): a
    directory, a device such as /dev/zero, a FIFO or a socket is named as what it is."""
    if path.is_dir():
        raise ModelError(f"{path} is a directory, not a model file: expected {_EXPECTED}")
    if path.is_file():
        return
    if not os.path.lexists(path):
        raise ModelError(f"model file {str(path)!r} does not exist")
    kind = ("a character device" if path.is_char_device() else
            "a block device" if path.is_block_device() else
            "a FIFO (named pipe)" if path.is_fifo() else
            "a socket" if path.is_socket() else
            "a broken symbolic link" if path.is_symlink() else "not a regular file")
    raise ModelError(f"{path} is {kind}, not a model file: expected {_EXPECTED} "
                     "(a regular file)")


def check_finite(state: Mapping[str, torch.Tensor], path: str | os.PathLike[str]) -> None:
    """Raise ModelError naming the file and its tensors that hold NaN or infinity.

    Such weights run without complaint and give black or NaN frames, so they are refused
    wherever a model is loaded (the filter, conversion, verification).
    """
    import torch

    bad = []
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            nan, inf = int(torch.isnan(tensor).sum()), int(torch.isinf(tensor).sum())
            bad.append(f"{key} ({nan} NaN, {inf} infinite of {tensor.numel()})")
    if bad:
        more = f" and {len(bad) - 3} more tensors" if len(bad) > 3 else ""
        raise ModelError(f"{path}: the weights are not finite: {', '.join(bad[:3])}{more}; "
                         "the file is damaged or comes from a diverged training run: use "
                         "another checkpoint")


def _build(state: dict[str, torch.Tensor], ncnn: NcnnNetwork | None,
           act_type: Activation | None) -> tuple[NetworkSpec, nn.Module]:
    """The network for a state dict: spandrel's module, resized where an ncnn export says
    its Compact body's output is."""
    from .architectures import build_network, with_bicubic_resize

    if ncnn is not None and ncnn.arch == "srvgg" and ncnn.act_type != "prelu":
        act_type = ncnn.act_type  # the graph tells ReLU from LeakyReLU; weights cannot
    spec, network = build_network(state, act_type=act_type)
    if ncnn is not None and ncnn.bicubic_from:
        spec, network = with_bicubic_resize(spec, network, ncnn.scale)
    return spec, network


def model_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 identifying a model file's contents (an ncnn model: .param and .bin)."""
    path = Path(path)
    if path.suffix.lower() != ".param":
        return file_sha256(path)
    combined = hashlib.sha256()
    for part in (path, path.with_suffix(".bin")):
        combined.update(bytes.fromhex(file_sha256(part)))
    return combined.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's contents, read in chunks."""
    digest = hashlib.sha256()
    hash_file_into(digest, path)
    return digest.hexdigest()


def hash_file_into(digest: hashlib._Hash, path: str | os.PathLike[str]) -> None:
    """Feed a file's contents to ``digest`` in 1 MiB chunks."""
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)


def _read_ncnn(path: Path) -> tuple[NcnnNetwork, dict[str, torch.Tensor]]:
    import torch

    from .ncnn_import import read_ncnn

    info, arrays = read_ncnn(path)
    return info, {key: torch.from_numpy(value) for key, value in arrays.items()}


def _read_torch(path: Path) -> object:
    from .torch_file import check_declared_sizes

    _check_torch_header(path)
    check_declared_sizes(path)  # before torch allocates what a forged file declares
    import torch  # after the checks: a refused file costs no PyTorch start-up

    try:
        with warnings.catch_warnings():  # its notes on pickle protocols are not for users
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelError(f"{path}: refused to load: the checkpoint holds objects other than "
                         f"tensors ({_offending(path, exc)}), and unpickling such objects "
                         "can run code; re-save its state dict alone "
                         "(torch.save(model.state_dict(), ...)) where it comes from") from None
    except Exception as exc:  # the unpickler fails in many ways on damaged input
        raise ModelError(f"{path}: not a readable PyTorch checkpoint "
                         f"({type(exc).__name__}: {str(exc)[:200]})") from None


# What torch's weights-only unpickler accepts without being told (torch/_weights_only_
# unpickler.py): its own classes and functions, OrderedDict and the byte decoder.
_SAFE_GLOBAL_PREFIXES = ("torch ", "torch.", "collections OrderedDict", "_codecs encode")


def _offending(path: Path, exc: Exception) -> str:
    """The classes or functions that made torch refuse a file, by name (never torch's
    own advice, which is to turn the safety off)."""
    import re

    from .torch_file import pickle_globals

    named = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
    others = [name.replace(" ", ".") for name in pickle_globals(path)
              if not name.startswith(_SAFE_GLOBAL_PREFIXES)]
    if named and named.group(1) not in others:
        others.insert(0, named.group(1))
    if others:
        shown = ", ".join(others[:4]) + (f" and {len(others) - 4} more" if len(others) > 4
                                        else "")
        return f"it names {shown}"
    found = re.search(r"(Unsupported operand \d+|Unsupported class \S+)", str(exc))
    return found.group(1) if found else "an object torch does not load safely"


def _check_torch_header(path: Path) -> None:
    """ModelError unless the file starts as torch.save writes: a zip archive (PyTorch 1.6
    and later) or a pickle (the legacy format, protocol 2 or later)."""
    with open(path, "rb") as stream:
        head = stream.read(16)
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return
    if path.suffix.lower() == ".bin":
        param = path.with_suffix(".param")
        hint = (f"pass {param.name} instead (the .bin stays beside it)" if param.is_file()
                else "pass the .param file that belongs to it, with the .bin beside it")
        raise ModelError(f"{path}: not a PyTorch checkpoint; a .bin that is not one is the "
                         f"weights half of an ncnn model: {hint}")
    raise ModelError(f"{path}: not a readable PyTorch checkpoint: it starts with "
                     f"{_describe_start(head)}, not the zip archive or pickle torch.save "
                     f"writes; expected {_EXPECTED}")


def _describe_start(head: bytes) -> str:
    if not head:
        return "nothing (the file is empty)"
    text = head.decode("utf-8", errors="replace")
    if text.isprintable() or all(c.isprintable() or c.isspace() for c in text):
        return f"text {text.strip()[:16]!r}"
    return f"bytes {head[:8].hex(' ')}"


def _safetensors_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(path, "pt") as reader:
        return reader.metadata() or {}


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"{path}: not a readable safetensors file ({exc})") from None
