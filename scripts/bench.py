"""Benchmark: this project's backends, and (with --peers) the peers, on the same weights.

Two parts:

1. Pipeline efficiency (default): frames/s, pipeline efficiency (the share of wall time
   in which the backend is computing: what tiling, conversion and stitching cost where
   they do not overlap it) and compute waste (computed tile area / frame area) of our
   backends at 1920x1080 and 640x360, with a random-weight SRVGGNetCompact of
   realesr-animevideov3's shape, with one VapourSynth thread and with its default count.
2. Peers (--peers): the same clip and the same weights through our backends (torch at
   its default precision and at fp32, mil, and on macOS Core ML with each compute-unit
   setting) and vs-mlrt's ONNX Runtime (CPU, fp32; on macOS also its Core ML provider)
   and OpenVINO (at its CPU plugin's default precision, which is bf16 on CPUs with native
   bfloat16, and forced to f32) runtimes (an ONNX export of the same network) and, where
   installed, Real-ESRGAN's own inference (``pip install realesrgan``), whole frames (one
   tile each, so only the network runtimes differ), two ways: all runners in one process
   under VapourSynth with its default thread count, and each run in its own process
   (clean peak memory). Runs alternate (A B C A B C ...); medians are reported with the
   matched-precision ratios, and a markdown report and a PNG chart are written to
   docs/benchmarks/.

    python scripts/bench.py                  # part 1
    python scripts/bench.py --peers          # part 2 (needs vapoursynth-mlrt-ort/-ov, onnx)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT_DIR = ROOT / "docs" / "benchmarks"
# Untimed frames first: the torch backend's traced graph is profiled and optimised on its
# first two calls, and every runtime allocates on its first; video is the steady state.
WARM_UP_FRAMES = 2

LABELS = {  # runner -> what the report calls it ({auto}, {ov}: see precisions())
    "torch": "ours: torch CPU auto ({auto})",
    "torch-fp32": "ours: torch CPU fp32",
    "torch-cuda": "ours: torch CUDA fp16",
    "torch-mps": "ours: torch MPS fp16",
    "mil": "ours: mil (fp16 ML Program)",
    "coreml-ane": "ours: Core ML CPU+ANE fp16",
    "coreml-gpu": "ours: Core ML CPU+GPU fp16",
    "coreml-all": "ours: Core ML all fp16",
    "coreml-ane-ct": "ours: Core ML CPU+ANE fp16 (coremltools)",
    "coreml-gpu-fp32": "ours: Core ML CPU+GPU fp32",
    "ort": "vs-mlrt ORT CPU fp32",
    "ov": "vs-mlrt OpenVINO CPU default ({ov})",
    "ov-f32": "vs-mlrt OpenVINO CPU f32 (forced)",
    "ort-coreml": "vs-mlrt ORT Core ML provider",
    "realesrgan": "Real-ESRGAN inference (torch CPU fp32)",
    "vsrealesrgan": "vsrealesrgan (torch CUDA fp16)",
}


def _is_ours(runner: str) -> bool:
    return LABELS[runner].startswith("ours")


def label(runner: str, facts: dict[str, str]) -> str:
    """The report's name for a runner, with the precisions it resolved to here."""
    return LABELS[runner].format(**facts)


def precisions() -> dict[str, str]:
    """What 'auto' means for our torch CPU backend here, and OpenVINO's CPU default."""
    from vs_coreml_esrgan.backends.torch_backend import resolve_precision

    return {"auto": resolve_precision("auto", "cpu"), "ov": ov_default_precision()}


def ov_default_precision() -> str:
    """OpenVINO's CPU plugin's INFERENCE_PRECISION_HINT, read through the OpenVINO C
    library that vs-mlrt's ov plugin ships (the same build it runs): 'bf16' on CPUs with
    native bfloat16, else 'f32'. 'unknown' where it cannot be read."""
    import ctypes

    try:
        import vapoursynth as vs

        plugin = vs.core.ov.Version()["path"]
        folder = Path(plugin.decode() if isinstance(plugin, bytes) else plugin).parent
        library = ctypes.CDLL(str(next(folder.glob("libopenvino_c.*"))))
    except (AttributeError, KeyError, StopIteration, OSError):
        return "unknown"
    core, value = ctypes.c_void_p(), ctypes.c_char_p()
    if library.ov_core_create(ctypes.byref(core)) != 0:
        return "unknown"
    try:
        status = library.ov_core_get_property(core, b"CPU", b"INFERENCE_PRECISION_HINT",
                                              ctypes.byref(value))
        return value.value.decode() if status == 0 and value.value else "unknown"
    finally:
        library.ov_core_free(core)


@dataclass
class TimedBackend:
    """Wraps a backend and measures how long it is busy: the union of the intervals in
    which at least one call is in progress. With several VapourSynth threads a call can
    wait for another (backends serialise their calls); counting each call's own wall time
    would count that wait twice and could exceed the wall time."""

    inner: object
    seconds: float = 0.0
    calls: int = 0
    _active: int = 0
    _since: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __getattr__(self, attribute: str):  # name, scale, input_dtype: the wrapped one's
        if attribute in ("inner", "_lock"):  # not set yet (construction): no recursion
            raise AttributeError(attribute)
        return getattr(self.inner, attribute)

    def reset(self) -> None:
        with self._lock:
            self.seconds, self.calls = 0.0, 0
            self._since = time.perf_counter()

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        with self._lock:
            if self._active == 0:
                self._since = time.perf_counter()
            self._active += 1
        try:
            return self.inner(tiles)
        finally:
            with self._lock:
                self._active -= 1
                self.calls += 1
                if self._active == 0:
                    self.seconds += time.perf_counter() - self._since


# --- models -----------------------------------------------------------------------------

def load_network(model: str):
    """(spec, a fresh copy of the torch network) for a catalogue name or 'random-compact' /
    'random-rrdb' (loaded once per process: official models take seconds to read)."""
    import copy

    spec, network = _load_network(model)
    return spec, copy.deepcopy(network)


@functools.cache
def _load_network(model: str):
    import torch
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.ESRGAN import ESRGAN

    from vs_coreml_esrgan.architectures import build_network
    from vs_coreml_esrgan.checkpoint import load_model

    if model.startswith("random-"):
        torch.manual_seed(0)
        untrained = (Compact(num_feat=64, num_conv=16, upscale=4) if model == "random-compact"
                     else ESRGAN(num_filters=64, num_blocks=23, scale=4))
        with torch.no_grad():
            for parameter in untrained.parameters():
                parameter.mul_(0.5)
        return build_network(untrained.state_dict())
    from vs_coreml_esrgan.filter import _model_path

    loaded = load_model(_model_path(model))
    return loaded.spec, loaded.network


# --- one measured run (in a worker process) ---------------------------------------------

def run_once(runner: str, model: str, width: int, height: int, frames: int,
             workdir: Path, overlap: int | None = None,
             vs_threads: int | None = None) -> dict:
    """Time ``frames`` frames (after WARM_UP_FRAMES untimed ones) through one runner.

    ``overlap`` None: the whole RGB frame as one tile (peers). Else (our backends only):
    YUV420P8 frames, as from a video, in the tiles the filter would plan with that overlap.
    ``vs_threads`` None: VapourSynth's default thread count (as vspipe runs); frames are
    requested as vspipe does, up to that many at once.
    """
    import resource

    import vapoursynth as vs

    core = vs.core
    if vs_threads:
        core.num_threads = vs_threads
    clip, plan = _source(model, width, height, WARM_UP_FRAMES + frames, overlap)
    if runner == "realesrgan":
        spec, network = load_network(model)
        return _run_realesrgan(model, spec, network, clip, frames, workdir)
    out, timed = build_runner(runner, model, clip, plan, workdir)
    _fetch(out, 0, WARM_UP_FRAMES)
    if timed:
        timed.reset()
    wall, faults = _timed_fetch(out, WARM_UP_FRAMES, WARM_UP_FRAMES + frames)
    return {"runner": runner, "model": model, "s_per_frame": wall / frames,
            "efficiency": timed.seconds / wall if timed else None,
            "faults_per_frame": faults / frames,
            "tile": f"{plan.x.tile}x{plan.y.tile}", "tiles": plan.num_tiles,
            "waste": plan.compute_waste, "vs_threads": core.num_threads,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_together(runners: list[str], model: str, width: int, height: int, frames: int,
                 rounds: int, workdir: Path, vs_threads: int | None = None) -> dict:
    """All ``runners`` in this one process under VapourSynth (its default thread count
    unless ``vs_threads``), whole frames; each warmed up, then ``rounds`` alternating
    rounds (A B C A B C ...) of ``frames`` new frames each. Returns {runner: [result per
    round]}."""

    import vapoursynth as vs

    core = vs.core
    if vs_threads:
        core.num_threads = vs_threads
    clip, plan = _source(model, width, height, WARM_UP_FRAMES + rounds * frames, None)
    built = {runner: build_runner(runner, model, clip, plan, workdir) for runner in runners}
    for out, _ in built.values():
        _fetch(out, 0, WARM_UP_FRAMES)
    results: dict[str, list[dict]] = {runner: [] for runner in runners}
    for round_index in range(rounds):
        first = WARM_UP_FRAMES + round_index * frames  # new frames: none from the cache
        for runner, (out, timed) in built.items():
            if timed:
                timed.reset()
            wall, faults = _timed_fetch(out, first, first + frames)
            results[runner].append({
                "runner": runner, "model": model, "s_per_frame": wall / frames,
                "efficiency": timed.seconds / wall if timed else None,
                "faults_per_frame": faults / frames,
                "vs_threads": core.num_threads, "peak_rss_mb": None})
            print(f"round {round_index + 1}/{rounds} {model:22} {runner:8} "
                  f"{wall / frames:.3f} s/frame", file=sys.stderr, flush=True)
    return results


def _source(model: str, width: int, height: int, length: int, overlap: int | None):
    """(clip, tile plan): with ``overlap`` None an RGBS clip planned as one whole-frame
    tile (peers), else a YUV420P8 clip in the tiles the filter would plan."""
    import vapoursynth as vs

    from vs_coreml_esrgan import choose_tile_size, plan_tiles

    core = vs.core
    scale = load_network(model)[0].scale
    # Network cost does not depend on pixel values; a blank clip measures it fairly.
    if overlap is None:
        clip = core.std.BlankClip(format=vs.RGBS, width=width, height=height,
                                  length=length, color=[0.3, 0.5, 0.7])
        tile = (width, height)
    else:
        clip = core.std.BlankClip(format=vs.YUV420P8, width=width, height=height,
                                  length=length)
        tile = choose_tile_size(width, height, overlap)
    return clip, plan_tiles(width, height, tile, overlap or 0, scale)


def _timed_fetch(clip, first: int, stop: int) -> tuple[float, int]:
    """_fetch, returning its wall time (s) and the fresh pages the kernel zeroed for this
    process meanwhile (minor page faults; see vs_coreml_esrgan/backends/cpu_memory.py)."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    _fetch(clip, first, stop)
    wall = time.perf_counter() - start
    return wall, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def _fetch(clip, first: int, stop: int) -> None:
    """Frames [first, stop) as vspipe asks for them: up to core.num_threads requests
    outstanding, taken in order."""
    import collections

    import vapoursynth as vs

    pending: collections.deque = collections.deque()
    n = first
    while n < stop or pending:
        while n < stop and len(pending) < vs.core.num_threads:
            pending.append(clip.get_frame_async(n))
            n += 1
        pending.popleft().result()


def build_runner(runner: str, model: str, clip, plan, workdir: Path):
    """(output clip, TimedBackend or None) of one runner on ``clip``; each gets a fresh
    copy of the network (our backends convert theirs in place to their precision)."""
    import vapoursynth as vs

    core = vs.core
    spec, network = load_network(model)
    tile = plan.tile_size
    if _is_ours(runner):
        from vs_coreml_esrgan.filter import apply_backend

        if runner.startswith("torch"):  # torch: the CPU, auto; -fp32; -cuda, -mps: fp16
            from vs_coreml_esrgan.backends.torch_backend import create_torch_backend

            variant = runner.partition("-")[2]
            on_cpu = variant in ("", "fp32")
            inner = create_torch_backend(network, spec.scale,
                                         device="cpu" if on_cpu else variant,
                                         precision="fp32" if variant == "fp32" else "auto")
        elif runner == "mil":
            from vs_coreml_esrgan.backends.mil_backend import create_mil_backend

            inner = create_mil_backend(_package(model, spec, network, tile, workdir))
        else:  # coreml-UNITS[-ct|-fp32]: Core ML (macOS); -ct: through coremltools
            from vs_coreml_esrgan.backends.coreml_backend import create_coreml_backend

            units, _, variant = runner.removeprefix("coreml-").partition("-")
            package = _package(model, spec, network, tile, workdir,
                               precision="fp32" if variant == "fp32" else "fp16")
            inner = create_coreml_backend(
                package, compute_units=units,
                runtime="coremltools" if variant == "ct" else "auto")
        timed = TimedBackend(inner)
        return apply_backend(clip, timed, plan), timed
    if runner == "vsrealesrgan":  # CUDA only; fp16, as ours on CUDA
        from vsrealesrgan import realesrgan

        return realesrgan(clip.resize.Point(format=vs.RGBH),
                          model_path=str(_params_checkpoint(model, network, workdir))), None
    onnx = _onnx(model, network, workdir)
    if runner in ("ort", "ort-coreml"):
        provider = "COREML" if runner == "ort-coreml" else "CPU"
        return core.ort.Model(clip, network_path=str(onnx), provider=provider), None
    if runner == "ov-f32":
        return core.ov.Model(clip, network_path=str(onnx), device="CPU",
                             config=lambda: {"INFERENCE_PRECISION_HINT": "f32"}), None
    return core.ov.Model(clip, network_path=str(onnx), device="CPU"), None


def _run_realesrgan(model: str, spec, network, clip, frames: int, workdir: Path) -> dict:
    """Real-ESRGAN's own inference (``RealESRGANer.enhance``, as its inference script runs
    it: whole frame, no pre-padding, fp32 on the CPU) on the clip's first frame as the
    8-bit BGR image it takes, with the same weights."""
    import resource

    import torch

    RealESRGANer = _import_realesrgan()
    hyper = network.hyperparameters  # spandrel's constructor arguments
    if spec.arch == "ESRGAN":
        from basicsr.archs.rrdbnet_arch import RRDBNet

        arch = RRDBNet(num_in_ch=3, num_out_ch=3, num_feat=hyper["num_filters"],
                       num_block=hyper["num_blocks"], num_grow_ch=32, scale=spec.scale)
    else:
        from realesrgan.archs.srvgg_arch import SRVGGNetCompact

        arch = SRVGGNetCompact(num_in_ch=3, num_out_ch=3, num_feat=hyper["num_feat"],
                               num_conv=hyper["num_conv"], upscale=spec.scale,
                               act_type=hyper["act_type"])
    weights = _params_checkpoint(model, network, workdir)
    upsampler = RealESRGANer(scale=spec.scale, model_path=str(weights), model=arch, tile=0,
                             pre_pad=0, half=False, device=torch.device("cpu"))
    frame = clip.get_frame(0)
    rgb = np.stack([np.asarray(frame[p]) for p in range(3)], axis=-1)
    image = np.ascontiguousarray((rgb[..., ::-1] * 255).round().astype(np.uint8))
    for _ in range(WARM_UP_FRAMES):
        upsampler.enhance(image, outscale=spec.scale)
    start = time.perf_counter()
    for _ in range(frames):
        upsampler.enhance(image, outscale=spec.scale)
    wall = time.perf_counter() - start
    return {"runner": "realesrgan", "model": model, "s_per_frame": wall / frames,
            "efficiency": None,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _params_checkpoint(model: str, network, workdir: Path) -> Path:
    """The network's weights as a Real-ESRGAN training checkpoint ({'params': ...}), the
    layout Real-ESRGAN's and vsrealesrgan's loaders read."""
    import torch

    path = workdir / f"{model}-params.pth"
    if not path.exists():
        state = network.state_dict()
        if "model.0.weight" in state:  # spandrel's ESRGAN keys: the original ESRGAN layout
            state = _basicsr_rrdbnet_keys(state)
        torch.save({"params": state}, path)
    return path


def _basicsr_rrdbnet_keys(state: dict) -> dict:
    """An x4 ESRGAN state dict in the original layout (``model.N``) with basicsr's names."""
    import re

    blocks = 1 + max(int(m.group(1)) for key in state
                     if (m := re.match(r"model\.1\.sub\.(\d+)\.RDB", key)))
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


def _import_realesrgan():
    """realesrgan's RealESRGANer. Its dependency basicsr (1.4.2, the newest) imports
    ``torchvision.transforms.functional_tensor``, gone since torchvision 0.17; the one
    function it takes from there lives on in ``torchvision.transforms.functional``."""
    import importlib

    try:
        importlib.import_module("torchvision.transforms.functional_tensor")
    except ModuleNotFoundError:
        import torchvision.transforms.functional as functional

        sys.modules["torchvision.transforms.functional_tensor"] = functional
    from realesrgan import RealESRGANer

    return RealESRGANer


def _onnx(model: str, network, workdir: Path) -> Path:
    import torch

    path = workdir / f"{model}.onnx"
    if not path.exists():
        example = torch.rand(1, 3, 64, 64)
        torch.onnx.export(network.eval(), example, str(path), opset_version=17, dynamo=False,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {2: "h", 3: "w"},
                                        "output": {2: "h4", 3: "w4"}})
    return path


def _package(model: str, spec, network, tile, workdir: Path, *,
             precision: str = "fp16") -> Path:
    from vs_coreml_esrgan.checkpoint import LoadedModel
    from vs_coreml_esrgan.coreml.convert import convert_model

    path = workdir / f"{model}-{tile[0]}x{tile[1]}-{precision}.mlpackage"
    if not path.exists():
        import torch

        checkpoint = workdir / f"{model}.pth"
        torch.save(network.state_dict(), checkpoint)
        convert_model(LoadedModel(spec=spec, network=network, path=checkpoint), path,
                      tile=tile, precision=precision)
    return path


# --- part 1: efficiency -----------------------------------------------------------------

def our_runners() -> list[str]:
    """This project's backends that run on this machine, at their default precision."""
    import torch

    runners = ["torch", "mil"]
    if torch.cuda.is_available():
        runners.append("torch-cuda")
    if torch.backends.mps.is_available():
        runners.append("torch-mps")
    if sys.platform == "darwin":
        runners += ["coreml-ane", "coreml-gpu", "coreml-all"]
    return runners


def efficiency(sizes: list[tuple[int, int]], frames: int, overlap: int,
               thread_counts: list[int | None]) -> None:
    """Part 1: each of our backends at each size, in the tiles the filter plans, with each
    VapourSynth thread count (None: its default)."""
    import torch

    facts = precisions()
    print(f"random SRVGGNetCompact x4 (16 convs, 64 feat); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; overlap {overlap}; {frames} frames after "
          f"{WARM_UP_FRAMES} untimed, requested as vspipe does; YUV420P8 input; each run "
          "in its own process; pipeline efficiency: share of wall time the backend is busy")
    print("| frame | backend | VS threads | tile | tiles | compute waste | s/frame | fps | "
          "pipeline efficiency | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as work:
        for width, height in sizes:
            for runner in our_runners():
                for threads in thread_counts:
                    r = _worker(runner, "random-compact", (width, height), frames,
                                Path(work), overlap=overlap, vs_threads=threads)
                    print(f"| {width}x{height} | "
                          f"{label(runner, facts).removeprefix('ours: ')} | "
                          f"{r['vs_threads']} | {r['tile']} | {r['tiles']} | "
                          f"{r['waste']:.3f} | {r['s_per_frame']:.2f} | "
                          f"{1 / r['s_per_frame']:.3f} | {r['efficiency']:.3f} | "
                          f"{r['peak_rss_mb']:.0f} |", flush=True)


# --- part 2: peers ----------------------------------------------------------------------

# Runners measured in the one-process method: those that run under VapourSynth and
# compete at matched precision (mil and Real-ESRGAN's script run in the per-process one).
TOGETHER = ("torch", "torch-fp32", "torch-cuda", "torch-mps", "ort", "ov", "ov-f32",
            "coreml-ane", "coreml-gpu", "coreml-all", "ort-coreml", "vsrealesrgan")


def available_runners(facts: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """Runners this machine has, and why each missing one is missing. ``torch-fp32`` and
    ``ov-f32`` only where the defaults are something else (else they would repeat)."""
    import torch
    import vapoursynth as vs

    runners, missing = our_runners(), {}
    if facts["auto"] != "fp32":
        runners.insert(1, "torch-fp32")
    for name, package in (("ort", "vapoursynth-mlrt-ort"), ("ov", "vapoursynth-mlrt-ov")):
        if hasattr(vs.core, name):
            runners.append(name)
            if name == "ov" and facts["ov"] != "f32":
                runners.append("ov-f32")
        else:
            missing[name] = f"not installed (pip install {package})"
    import importlib.util

    if importlib.util.find_spec("vsrealesrgan") is None:
        missing["vsrealesrgan"] = "not installed (it runs on CUDA only)"
    elif not torch.cuda.is_available():
        missing["vsrealesrgan"] = "installed, but it runs on CUDA only and there is no GPU"
    else:
        runners.append("vsrealesrgan")
    if importlib.util.find_spec("realesrgan") is None:
        missing["Real-ESRGAN inference"] = "not installed (pip install realesrgan)"
    else:
        runners.append("realesrgan")
    if sys.platform == "darwin":
        from vs_coreml_esrgan.backends.coreml_pyobjc import pyobjc_available

        if pyobjc_available():  # the default runtime is PyObjC: show coremltools' too
            runners.append("coreml-ane-ct")
        runners.append("coreml-gpu-fp32")  # the Neural Engine runs only fp16
        if "ort" in runners:
            runners.append("ort-coreml")
    else:
        missing["coreml"] = "Core ML predicts only on macOS"
        missing["vs-mlrt ORT with the Core ML provider"] = "macOS only"
    return runners, missing


Results = dict[tuple[str, str, str], list[dict]]  # (method, model, runner) -> rounds


def peers(models: list[tuple[str, tuple[int, int]]], frames: int, rounds: int,
          methods: list[str], vs_threads: int | None, name: str | None,
          out_dir: Path, only: list[str] | None = None) -> None:
    facts = precisions()
    runners, missing = available_runners(facts)
    if only:
        unknown = sorted(set(only) - set(LABELS))
        if unknown:
            raise SystemExit(f"unknown runners {', '.join(unknown)}; known: "
                             f"{', '.join(LABELS)}")
        for runner in [r for r in runners if r not in only]:
            runners.remove(runner)
            missing[label(runner, facts)] = "left out (--runners)"
        if not runners:  # e.g. torch-fp32 where 'torch' (auto) is fp32 already
            raise SystemExit(f"none of {', '.join(only)} runs on this machine; its "
                             f"runners: {', '.join(available_runners(facts)[0])} (fp32 and "
                             "f32 twins are left out where the defaults are fp32/f32)")
    results: Results = {}
    with tempfile.TemporaryDirectory() as work:
        for model, size in models:
            if "together" in methods:
                together = [r for r in runners if r in TOGETHER]
                try:
                    done = _worker_together(together, model, size, frames, rounds,
                                            Path(work), vs_threads)
                except RuntimeError as exc:
                    raise SystemExit(f"the one-process run on {model} failed: {exc}") from None
                for runner, rows in done.items():
                    results[("together", model, runner)] = rows
            if "process" in methods:
                for round_index in range(rounds):
                    for runner in list(runners):  # alternate: A B C, A B C, ...
                        try:
                            result = _worker(runner, model, size, frames, Path(work),
                                             vs_threads=vs_threads)
                        except RuntimeError as exc:
                            if not _is_ours(runner):
                                # a peer that fails here is reported, not fatal
                                runners.remove(runner)
                                missing[label(runner, facts)] = f"failed on {model}: {exc}"
                                continue
                            raise SystemExit(f"{runner} on {model} failed: {exc}") from None
                        results.setdefault(("process", model, runner), []).append(result)
                        print(f"round {round_index + 1}/{rounds} {model:22} {runner:8} "
                              f"{result['s_per_frame']:.3f} s/frame", flush=True)
    report(results, facts, missing, models, frames, rounds, methods, name, out_dir)


def _run_worker(job: dict) -> dict:
    """One worker process running ``job``; its last line of output is the JSON answer.
    Raises RuntimeError with the last line of its error output (the end of which is
    printed)."""
    command = [sys.executable, __file__, "--worker", json.dumps(job)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["(no message)"]
        print(f"{job['runner']} on {job['model']} failed:", *lines[-20:], sep="\n",
              file=sys.stderr)
        raise RuntimeError(lines[-1])
    return json.loads(done.stdout.strip().splitlines()[-1])


def _worker(runner: str, model: str, size: tuple[int, int], frames: int, work: Path, *,
            overlap: int | None = None, vs_threads: int | None = None) -> dict:
    """One run in a fresh process (see run_once)."""
    return _run_worker({"runner": runner, "model": model, "width": size[0],
                        "height": size[1], "frames": frames, "workdir": str(work),
                        "overlap": overlap, "vs_threads": vs_threads})


def _worker_together(runners: list[str], model: str, size: tuple[int, int], frames: int,
                     rounds: int, work: Path, vs_threads: int | None) -> dict:
    """Every runner in one fresh process (see run_together)."""
    return _run_worker({"runner": runners, "model": model, "width": size[0],
                        "height": size[1], "frames": frames, "rounds": rounds,
                        "workdir": str(work), "vs_threads": vs_threads})


def _versions() -> str:
    import importlib.metadata

    import torch
    import vapoursynth as vs

    parts = [f"Python {platform.python_version()}",
             f"VapourSynth R{vs.__version__.release_major}", f"torch {torch.__version__}"]
    for name in ("coremltools", "onnx", "vapoursynth-mlrt-ort", "vapoursynth-mlrt-ov",
                 "realesrgan", "pyobjc-framework-CoreML"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            parts.append(f"{name} {importlib.metadata.version(name)}")
    return ", ".join(parts)


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    if sys.platform == "darwin":  # the chip's name, e.g. "Apple M2 Pro"
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            cpu = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"],
                                 capture_output=True, text=True, check=True).stdout.strip()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} logical CPUs"


def report(results: Results, facts: dict[str, str], missing: dict[str, str],
           models: list[tuple[str, tuple[int, int]]], frames: int, rounds: int,
           methods: list[str], name: str | None, out_dir: Path) -> None:
    from vs_coreml_esrgan.backends.torch_backend import cpu_has_native_bf16

    out_dir.mkdir(parents=True, exist_ok=True)
    threads = {row["vs_threads"] for rows in results.values() for row in rows}
    medians = {key: statistics.median(row["s_per_frame"] for row in rows)
               for key, rows in results.items()}
    lines = [f"# CPU benchmark: whole frames -> x4, {frames} frames per run (after "
             f"{WARM_UP_FRAMES} untimed), {rounds} alternating rounds, medians", "",
             f"- date: {datetime.date.today().isoformat()}", f"- machine: {_machine()}",
             f"- versions: {_versions()}",
             f"- precisions: our torch CPU 'auto' is {facts['auto']} here (native "
             f"bfloat16: {'yes' if cpu_has_native_bf16() else 'no'}); OpenVINO's CPU "
             f"default (INFERENCE_PRECISION_HINT, read from the OpenVINO library vs-mlrt "
             f"ships) is {facts['ov']}; 'f32 (forced)' passes INFERENCE_PRECISION_HINT=f32 "
             "through vs-mlrt's config; ONNX Runtime computes fp32",
             f"- VapourSynth threads: {', '.join(str(t) for t in sorted(threads))} "
             "(frames requested as vspipe does, up to that many at once); same weights, "
             "the whole frame as one tile, blank RGBS frames", ""]
    sections = {"together": "## All runners in one process (VapourSynth, default threads)\n\n"
                "Method: one process per model holds every runner; each is warmed up, then "
                "the runners take turns (A B C A B C ...), each round on frames none has "
                "computed before.",
                "process": "## One process per run\n\nMethod: every run in a fresh "
                "process, runners alternating; peak RSS is that process's maximum resident "
                "size. Page faults: fresh pages the kernel zeroed for the process (minor "
                "faults) per timed frame. Real-ESRGAN inference: its "
                "RealESRGANer.enhance (tile 0, pre_pad 0, fp32) on the same frame as the "
                "8-bit BGR image it takes."}
    chart: dict[str, dict[str, float]] = {}
    for method in methods:
        lines += [sections[method], "", "| model | frame | runner | s/frame (median) | "
                  "rounds | fps | pipeline efficiency | page faults/frame | peak RSS (MB) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for model, size in models:
            for (m, mod, runner), rows in results.items():
                if (m, mod) != (method, model):
                    continue
                median = medians[(m, mod, runner)]
                effs = [r["efficiency"] for r in rows if r["efficiency"] is not None]
                peaks = [r["peak_rss_mb"] for r in rows if r["peak_rss_mb"] is not None]
                faults = [r["faults_per_frame"] for r in rows if "faults_per_frame" in r]
                lines.append(
                    f"| {model} | {size[0]}x{size[1]} | {label(runner, facts)} | "
                    f"{median:.3f} | {' '.join(f'{r['s_per_frame']:.2f}' for r in rows)} | "
                    f"{1 / median:.2f} | "
                    f"{f'{statistics.median(effs):.3f}' if effs else '-'} | "
                    f"{f'{statistics.median(faults):.0f}' if faults else '-'} | "
                    f"{f'{max(peaks):.0f}' if peaks else '-'} |")
                if method == methods[0]:
                    chart.setdefault(f"{model} {size[0]}x{size[1]}", {})[
                        label(runner, facts)] = 1 / median
        lines.append("")
    lines += ["## Matched comparisons", "", "Speed-up = the peer's s/frame / ours "
              "(> 1: ours is faster), from the medians above.", "",
              "| model | frame | method | ours fp32 vs ORT fp32 | ours fp32 vs OpenVINO f32 "
              f"| ours auto ({facts['auto']}) vs OpenVINO default ({facts['ov']}) |",
              "|---|---|---|---|---|---|"]
    ours_fp32 = "torch-fp32" if facts["auto"] != "fp32" else "torch"
    ov_f32 = "ov-f32" if facts["ov"] != "f32" else "ov"
    for method in methods:
        for model, size in models:
            pairs = ((ours_fp32, "ort"), (ours_fp32, ov_f32), ("torch", "ov"))
            cells = [_speed_up(medians.get((method, model, ours)),
                               medians.get((method, model, peer))) for ours, peer in pairs]
            lines.append(f"| {model} | {size[0]}x{size[1]} | {method_names[method]} | "
                         + " | ".join(cells) + " |")
    lines += ["", "Not measured in this run:"]
    lines += [f"- {what}: {reason}" for what, reason in missing.items()]
    stem = name or ("mac" if sys.platform == "darwin" else "cpu-linux")
    table = out_dir / f"{stem}.md"
    table.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    _chart(chart, out_dir / f"{stem}.png", f"x4, {method_names[methods[0]]}, on {_machine()}")
    print(f"\nwrote {table} and {out_dir / f'{stem}.png'}")


method_names = {"together": "one process", "process": "process per run"}


def _speed_up(ours: float | None, peer: float | None) -> str:
    """The peer's time over ours ('-' where either was not measured)."""
    return f"{peer / ours:.2f}x" if ours and peer else "-"


def _chart(data: dict[str, dict[str, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(data)
    runners = list(next(iter(data.values())))
    figure, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.6),
                                squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        values = [data[model][r] for r in runners]
        ax.barh(runners, values, color=["#2a7" if r.startswith("ours") else "#888"
                                        for r in runners])
        ax.set_title(model, fontsize=10)
        ax.set_xlabel("frames per second (higher is better)")
        ax.invert_yaxis()
        for y, v in enumerate(values):
            ax.text(v, y, f" {v:.2f}", va="center", fontsize=8)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def _size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", action="store_true", help="compare with vs-mlrt runtimes")
    parser.add_argument("--sizes", default="1920x1080,640x360", help="part 1 frame sizes")
    parser.add_argument("--size", default="320x180",
                        help="part 2 frame size of models named without @WxH")
    parser.add_argument("--models", default="realesr-animevideov3@480x270,"
                        "realesrgan-x4plus@192x108",
                        help="part 2 models, each NAME or NAME@WxH (catalogue names, "
                        "random-compact, random-rrdb)")
    parser.add_argument("--method", choices=("both", "together", "process"), default="both",
                        help="part 2: all runners in one process, one process per run, or "
                        "both (default)")
    parser.add_argument("--runners", help="part 2: only these, comma-separated (e.g. "
                        "torch,torch-fp32,ort,ov,ov-f32; default: all this machine has)")
    parser.add_argument("--vs-threads", type=int, default=None,
                        help="VapourSynth threads (default: its own default, as vspipe; "
                        "part 1 runs 1 and the default)")
    parser.add_argument("--frames", type=int, default=None,
                        help="timed frames per run (default: part 1 2, part 2 4)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--overlap", type=int, default=16)
    parser.add_argument("--out-name", help="file name stem in docs/benchmarks/ (default "
                        "cpu-linux, or mac on macOS)")
    parser.add_argument("--out-dir", default=str(DEFAULT_OUT_DIR))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        job = json.loads(args.worker)
        if isinstance(job["runner"], list):
            answer = run_together(job["runner"], job["model"], job["width"], job["height"],
                                  job["frames"], job["rounds"], Path(job["workdir"]),
                                  job.get("vs_threads"))
        else:
            answer = run_once(job["runner"], job["model"], job["width"], job["height"],
                              job["frames"], Path(job["workdir"]), job.get("overlap"),
                              job.get("vs_threads"))
        print(json.dumps(answer))
        return 0
    if args.peers:
        models = [(name, _size(size) if size else _size(args.size))
                  for name, _, size in (m.partition("@") for m in args.models.split(","))]
        methods = ["together", "process"] if args.method == "both" else [args.method]
        peers(models, args.frames or 4, args.rounds, methods, args.vs_threads,
              args.out_name, Path(args.out_dir),
              args.runners.split(",") if args.runners else None)
    else:
        sizes = [_size(s) for s in args.sizes.split(",")]
        threads = [args.vs_threads] if args.vs_threads else [1, None]
        efficiency(sizes, args.frames or 2, args.overlap, threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
