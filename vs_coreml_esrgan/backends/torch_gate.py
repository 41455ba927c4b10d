"""The parity gate for PyTorch on a GPU (MPS), in a child process: backend 'auto' on a Mac
steps down to it only when it computes what PyTorch float32 on the CPU computes.

Run as ``python -m vs_coreml_esrgan.backends.torch_gate REQUEST``: loads the checkpoint,
runs the photograph tile (``parity_gate``) on the device in the asked precision and on the
CPU in float32, prints one JSON line ``{"psnr", "passed", "reason"}``. An MPSGraph
assertion (SIGABRT) ends only the child. The verdict is kept per checkpoint, device,
macOS and chip beside Core ML's (``choices/``); a failing one expires as Core ML's do.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ..cache import cache_dir
from . import BackendError, macos
from .coreml_child import child_environment, python_executable
from .coreml_records import FAILURE_DAYS

GATE_TIMEOUT_S = 300
GATE_TILE = 64


def check_torch_device(checkpoint: str | os.PathLike[str], device: str, precision: str,
                       digest: str) -> float:
    """The gate's PSNR for ``checkpoint`` (``digest``: its content hash) on ``device`` in
    ``precision``, from the saved verdict or a child process. Raises BackendError when the
    device is missing or fails the gate."""
    import torch

    if device == "mps" and not torch.backends.mps.is_available():  # before a child's cost
        raise BackendError("PyTorch has no MPS device here (torch.backends.mps."
                           "is_available() is False: a virtual machine, or a torch without "
                           "MPS)")
    path = _record_path(digest, device)
    verdict = _load(path)
    if verdict is None:
        verdict = _in_child(checkpoint, device, precision)
        if not verdict.get("transient"):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(verdict))
    if not verdict["passed"]:
        raise BackendError(f"torch on {device} ({precision}) failed the parity check against "
                           f"torch on the CPU: {verdict['reason']}")
    return float(verdict["psnr"])


def _record_path(digest: str, device: str) -> Path:
    version = macos.version_text().replace(" ", "")
    chip = re.sub(r"[^A-Za-z0-9.]+", "-", macos.chip_name()).strip("-")
    return cache_dir() / "choices" / f"{digest[:32]}-torch{device}-{version}-{chip}.json"


def _torch_version() -> str | None:
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def _load(path: Path) -> dict | None:
    try:
        verdict = json.loads(path.read_text())
        passed, measured = bool(verdict["passed"]), float(verdict["measured_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    fresh = time.time() - measured < FAILURE_DAYS * 86400 \
        and verdict.get("torch") == _torch_version()
    return verdict if passed or fresh else None


def _in_child(checkpoint: str | os.PathLike[str], device: str, precision: str) -> dict:
    request = json.dumps({"checkpoint": os.fspath(checkpoint), "device": device,
                          "precision": precision})
    stamp = {"measured_at": time.time(), "torch": _torch_version(), "psnr": None}
    try:
        done = subprocess.run(
            [python_executable(), "-m", "vs_coreml_esrgan.backends.torch_gate", request],
            capture_output=True, text=True, timeout=GATE_TIMEOUT_S,
            env=child_environment(), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {**stamp, "passed": False, "reason": f"no result within {GATE_TIMEOUT_S} s"}
    except (OSError, BackendError) as exc:
        return {**stamp, "passed": False, "transient": True,
                "reason": f"could not start the check: {exc}"}
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        why = lines[-1] if lines else f"exit status {done.returncode}"
        return {**stamp, "passed": False, "reason": f"the check ended ({why})"}
    try:
        return {**stamp, **json.loads(done.stdout.strip().splitlines()[-1])}
    except (ValueError, IndexError):
        return {**stamp, "passed": False, "reason": f"unreadable answer {done.stdout[-200:]!r}"}


def measure(request: dict) -> dict:
    """What the child computes (see the module's docstring)."""
    from ..checkpoint import load_model
    from .parity_gate import gate_tiles, judge
    from .torch_backend import create_torch_backend

    loaded = load_model(request["checkpoint"])
    spec = loaded.spec
    side = max(GATE_TILE, spec.minimum)
    side += -side % spec.multiple_of
    tiles = gate_tiles((1, spec.num_in_ch, side, side), "float32")
    reference = create_torch_backend(load_model(request["checkpoint"]).network, spec.scale,
                                     device="cpu", precision="fp32")(tiles)
    runner = create_torch_backend(loaded.network, spec.scale, device=request["device"],
                                  precision=request["precision"])
    verdict = judge(runner(tiles.astype(runner.input_dtype)), reference,
                    "fp32" if request["precision"] == "fp32" else "fp16")
    return {"psnr": verdict.psnr, "passed": verdict.passed, "reason": verdict.reason}


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        result = measure(json.loads(arguments[0]))
    except Exception as exc:  # the parent reads it as this device's failure
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
