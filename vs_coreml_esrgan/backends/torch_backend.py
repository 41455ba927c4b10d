"""PyTorch backend: CPU, CUDA or Apple MPS, in float32, float16 or bfloat16."""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import BackendError
from .cpu_memory import keep_freed_memory
from .torchscript import frozen_module

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# x86 CPU flags (Linux /proc/cpuinfo names) of instructions that compute bfloat16 products.
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def default_device() -> str:
    """'cuda' when available, else 'mps' when available, else 'cpu'."""
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware: x86 with AVX512-BF16 (Intel Cooper
    Lake and later Xeons, AMD Zen 4 and later) or AMX-BF16 (Intel Sapphire Rapids and
    later). Asked of PyTorch's own CPU probe (cpuinfo, which also knows whether the OS
    enabled AMX), with Linux's /proc/cpuinfo flags where this torch lacks the probe.
    False on every other CPU, Arm (Apple silicon) included: there PyTorch's CPU
    convolutions have no fast bfloat16 path, and emulated bfloat16 is several times slower
    than float32 (7.5x measured on an AVX2 EPYC)."""
    probes = [getattr(torch.cpu, name, None)
              for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(callable(p) for p in probes):
        return any(p() for p in probes)
    if not sys.platform.startswith("linux"):
        return False
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])
    return any(flag in flags for flag in _BF16_FLAGS)


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """'auto' made concrete for a device: fp16 on CUDA and MPS; on the CPU bf16 where it is
    native (:func:`cpu_has_native_bf16`), else fp32. Other values are returned as given."""
    if precision != "auto":
        return precision
    kind = device.type if isinstance(device, torch.device) else str(device).split(":")[0]
    if kind != "cpu":
        return "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


@dataclass(frozen=True, kw_only=True)
class TorchBackend:
    """A network on one torch device. Calls are serialised: one device runs one batch at a
    time anyway. On the CPU every call runs on one thread the backend owns, whichever
    VapourSynth thread makes it: each thread that enters PyTorch gets its own OpenMP team
    and oneDNN scratch memory, so calls from several threads would keep several teams
    competing for the same cores. Elsewhere a lock serialises them (MPS is not
    thread-safe)."""

    network: nn.Module
    scale: int
    device: torch.device
    dtype: torch.dtype
    name: str = "torch"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False,
                                  compare=False)
    _worker: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="torch-cpu"),
        repr=False, compare=False)
    _frozen: dict[tuple[int, ...], torch.jit.ScriptModule | nn.Module] = field(
        default_factory=dict, repr=False, compare=False)

    @property
    def input_dtype(self) -> np.dtype:
        return np.dtype(np.float16 if self.dtype == torch.float16 else np.float32)

    @property
    def precision(self) -> str:
        """'fp32', 'fp16' or 'bf16': what the network computes in."""
        return next(name for name, dtype in _DTYPES.items() if dtype == self.dtype)

    @property
    def stitches_on_device(self) -> bool:
        """CUDA and MPS: the filter cuts and stitches tiles on the device where the frame
        fits (see vs_coreml_esrgan/device_stitching.py), calling :meth:`run_tensor`."""
        return self.device.type in ("cuda", "mps")

    def run_tensor(self, tiles: torch.Tensor) -> torch.Tensor:
        """The network on a ``(N, C, H, W)`` tensor already on the device in ``dtype``;
        the output stays there."""
        with self._lock, torch.inference_mode():
            return self.network(tiles)

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        if self.device.type == "cpu":
            return self._worker.submit(self._run, tiles).result()
        with self._lock:
            return self._run(tiles)

    def _run(self, tiles: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(tiles)).to(self.device, self.dtype)
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
            run = self._frozen_for(x)
        else:
            run = self.network
        with torch.inference_mode():
            y = run(x)
        return y.to("cpu", torch.float32).contiguous().numpy()

    def _frozen_for(self, x: torch.Tensor) -> torch.jit.ScriptModule:
        """On the CPU, a traced and frozen copy per tile shape (every tile of a clip has
        the same shape): oneDNN then fuses layers, about 15 % faster than eager mode.
        Shared with other backends on the same weights (see torchscript.py: TorchScript
        never frees a trace)."""
        key = tuple(x.shape)
        if key not in self._frozen:
            try:
                self._frozen[key] = frozen_module(self.network, x)
            except Exception:  # an architecture the tracer cannot follow: run eagerly
                self._frozen[key] = self.network
        return self._frozen[key]


def create_torch_backend(network: nn.Module, scale: int, *, device: str | None = None,
                         precision: str = "auto") -> TorchBackend:
    """Move an eval-mode network (in place) to ``device`` in ``precision``.

    ``device`` None picks :func:`default_device`; ``precision`` 'auto' is fp16 on CUDA and
    MPS, and on the CPU bf16 where the CPU computes it natively, else fp32 (see
    :func:`resolve_precision`). Raises BackendError for an unknown or unavailable device,
    an unknown precision, fp16 on the CPU (PyTorch's CPU float16 convolutions are about
    40 times slower than float32 there), bf16 on MPS and bf16 on a GPU without it.
    bf16 on a CPU without native bfloat16 is allowed (correct, but several times slower
    than fp32; the filter says so). On the CPU (Linux, glibc) it sets this process's
    malloc to keep freed memory for reuse (:func:`.cpu_memory.keep_freed_memory`).
    """
    if precision not in PRECISIONS:
        raise BackendError(f"precision must be one of {', '.join(PRECISIONS)}, "
                           f"got {precision!r}")
    name = default_device() if device is None else device
    if not isinstance(name, str) or name.split(":")[0] not in ("cpu", "cuda", "mps"):
        hint = f" (a number is not a device: write 'cuda:{name}')" \
            if isinstance(name, int) and not isinstance(name, bool) else ""
        raise BackendError(f"device must be cpu, cuda[:N] or mps, got {device!r}{hint}")
    try:
        target = torch.device(name)
    except RuntimeError:
        raise BackendError(f"device must be cpu, cuda[:N] or mps, got {device!r}") from None
    if target.type == "cuda" and not torch.cuda.is_available():
        raise BackendError(f"device {device!r} asked for, but CUDA is not available")
    if target.type == "mps" and not torch.backends.mps.is_available():
        raise BackendError(f"device {device!r} asked for, but MPS is not available")
    precision = resolve_precision(precision, target)
    if precision == "fp16" and target.type == "cpu":
        raise BackendError("precision 'fp16' on the CPU is about 40x slower than fp32 in "
                           "PyTorch; use precision='fp32', 'bf16' or 'auto'")
    if precision == "bf16" and target.type == "mps":
        raise BackendError("precision 'bf16' is not supported on MPS; use 'fp16' or 'auto'")
    if precision == "bf16" and target.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise BackendError(f"this GPU ({torch.cuda.get_device_name(target)}) has no "
                           "bfloat16; use precision='fp16' or 'auto'")
    dtype = _DTYPES[precision]
    if target.type == "cpu":
        keep_freed_memory()  # each layer's output reuses freed memory (cpu_memory.py)
    memory_format = torch.channels_last if target.type == "cpu" else torch.contiguous_format
    network = network.to(device=target, dtype=dtype, memory_format=memory_format)
    return TorchBackend(network=network, scale=scale, device=target, dtype=dtype)
