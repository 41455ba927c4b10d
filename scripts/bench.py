"""Benchmark: this project's backends, and (with --peers) the peers, on the same weights.

Two parts:

1. Pipeline efficiency (default): frames/s, pipeline efficiency (time inside backend calls
   / wall time per frame: what tiling, conversion and stitching cost) and compute waste
   (computed tile area / frame area) of our backends at 1920x1080 and 640x360, with a
   random-weight SRVGGNetCompact of realesr-animevideov3's shape, one VapourSynth thread.
2. Peers (--peers): the same clip and the same weights through our backends (torch, mil,
   and on macOS Core ML with each compute-unit setting) and vs-mlrt's ONNX Runtime
   (CPU; on macOS also its Core ML provider) and OpenVINO runtimes (an ONNX export of the
   same network) and, where installed, Real-ESRGAN's own inference (``pip install
   realesrgan``), whole frames (one tile each, so only the network runtimes differ). Runs alternate
   (A B C A B C ...), each in its own process (clean peak memory); medians are reported
   with the ratio to the fastest peer, and a markdown table and a PNG chart are written to
   docs/benchmarks/.

    python scripts/bench.py                  # part 1
    python scripts/bench.py --peers          # part 2 (needs vapoursynth-mlrt-ort/-ov, onnx)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
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

LABELS = {  # runner -> what the report calls it
    "torch": "ours: torch CPU fp32",
    "torch-cuda": "ours: torch CUDA fp16",
    "torch-mps": "ours: torch MPS fp16",
    "mil": "ours: mil (fp16 ML Program)",
    "coreml-ane": "ours: Core ML CPU+ANE fp16",
    "coreml-gpu": "ours: Core ML CPU+GPU fp16",
    "coreml-all": "ours: Core ML all fp16",
    "coreml-ane-ct": "ours: Core ML CPU+ANE fp16 (coremltools)",
    "coreml-gpu-fp32": "ours: Core ML CPU+GPU fp32",
    "ort": "vs-mlrt ORT CPU",
    "ov": "vs-mlrt OpenVINO CPU",
    "ort-coreml": "vs-mlrt ORT Core ML provider",
    "realesrgan": "Real-ESRGAN inference (torch CPU fp32)",
    "vsrealesrgan": "vsrealesrgan (torch CUDA fp16)",
}


def _is_ours(runner: str) -> bool:
    return LABELS[runner].startswith("ours")


@dataclass
class TimedBackend:
    """Wraps a backend and adds up the wall time spent inside its calls."""

    inner: object
    seconds: float = 0.0
    calls: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __getattr__(self, attribute: str):  # name, scale, input_dtype: the wrapped one's
        if attribute == "inner":  # not set yet (during construction): no recursion
            raise AttributeError(attribute)
        return getattr(self.inner, attribute)

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        try:
            return self.inner(tiles)
        finally:
            with self._lock:
                self.seconds += time.perf_counter() - start
                self.calls += 1


# --- models -----------------------------------------------------------------------------

def load_network(model: str):
    """(spec, torch network) for a catalogue name or 'random-compact' / 'random-rrdb'."""
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
             workdir: Path, overlap: int | None = None) -> dict:
    """Time ``frames`` frames (after WARM_UP_FRAMES untimed ones) through one runner.

    ``overlap`` None: the whole RGB frame as one tile (peers). Else (our backends only):
    YUV420P8 frames, as from a video, in the tiles the filter would plan with that overlap.
    """
    import resource

    import vapoursynth as vs

    from vs_coreml_esrgan import choose_tile_size, plan_tiles

    core = vs.core
    core.num_threads = 1
    spec, network = load_network(model)
    # Network cost does not depend on pixel values; a blank clip measures it fairly.
    if overlap is None:
        clip = core.std.BlankClip(format=vs.RGBS, width=width, height=height,
                                  length=WARM_UP_FRAMES + frames, color=[0.3, 0.5, 0.7])
        tile = (width, height)
    else:
        clip = core.std.BlankClip(format=vs.YUV420P8, width=width, height=height,
                                  length=WARM_UP_FRAMES + frames)
        tile = choose_tile_size(width, height, overlap)
    plan = plan_tiles(width, height, tile, overlap or 0, spec.scale)
    timed = None
    if _is_ours(runner):
        from vs_coreml_esrgan.filter import apply_backend

        if runner.startswith("torch"):  # torch: the CPU; torch-cuda, torch-mps: fp16
            from vs_coreml_esrgan.backends.torch_backend import create_torch_backend

            inner = create_torch_backend(network, spec.scale,
                                         device=runner.partition("-")[2] or "cpu")
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
        out = apply_backend(clip, timed, plan)
    elif runner == "realesrgan":
        return _run_realesrgan(model, spec, network, clip, frames, workdir)
    elif runner == "vsrealesrgan":  # CUDA only; fp16, as ours on CUDA
        from vsrealesrgan import realesrgan

        out = realesrgan(clip.resize.Point(format=vs.RGBH),
                         model_path=str(_params_checkpoint(model, network, workdir)))
    else:
        onnx = _onnx(model, network, workdir)
        if runner in ("ort", "ort-coreml"):
            provider = "COREML" if runner == "ort-coreml" else "CPU"
            out = core.ort.Model(clip, network_path=str(onnx), provider=provider)
        else:
            out = core.ov.Model(clip, network_path=str(onnx), device="CPU")
    for n in range(WARM_UP_FRAMES):
        out.get_frame(n)
    if timed:
        timed.seconds = 0.0
    start = time.perf_counter()
    for n in range(WARM_UP_FRAMES, WARM_UP_FRAMES + frames):
        out.get_frame(n)
    wall = time.perf_counter() - start
    return {"runner": runner, "model": model, "s_per_frame": wall / frames,
            "efficiency": timed.seconds / wall if timed else None,
            "tile": f"{tile[0]}x{tile[1]}", "tiles": plan.num_tiles,
            "waste": plan.compute_waste,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


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
    """This project's backends that run on this machine."""
    import torch

    runners = ["torch", "mil"]
    if torch.cuda.is_available():
        runners.append("torch-cuda")
    if torch.backends.mps.is_available():
        runners.append("torch-mps")
    if sys.platform == "darwin":
        runners += ["coreml-ane", "coreml-gpu", "coreml-all"]
    return runners


def efficiency(sizes: list[tuple[int, int]], frames: int, overlap: int) -> None:
    """Part 1: each of our backends at each size, in the tiles the filter plans."""
    import torch

    print(f"random SRVGGNetCompact x4 (16 convs, 64 feat); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; overlap {overlap}; {frames} frames after "
          f"{WARM_UP_FRAMES} untimed; YUV420P8 input; one VapourSynth thread; each run in "
          "its own process")
    print("| frame | backend | tile | tiles | compute waste | s/frame | fps | pipeline "
          "efficiency | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as work:
        for width, height in sizes:
            for runner in our_runners():
                r = _worker(runner, "random-compact", (width, height), frames, Path(work),
                            overlap=overlap)
                print(f"| {width}x{height} | {LABELS[runner].removeprefix('ours: ')} | "
                      f"{r['tile']} | {r['tiles']} | {r['waste']:.3f} | "
                      f"{r['s_per_frame']:.2f} | {1 / r['s_per_frame']:.3f} | "
                      f"{r['efficiency']:.3f} | {r['peak_rss_mb']:.0f} |", flush=True)


# --- part 2: peers ----------------------------------------------------------------------

def available_runners() -> tuple[list[str], dict[str, str]]:
    import torch
    import vapoursynth as vs

    runners, missing = our_runners(), {}
    for name, package in (("ort", "vapoursynth-mlrt-ort"), ("ov", "vapoursynth-mlrt-ov")):
        if hasattr(vs.core, name):
            runners.append(name)
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


def peers(models: list[str], size: tuple[int, int], frames: int, rounds: int,
          name: str | None, out_dir: Path) -> None:
    runners, missing = available_runners()
    results: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as work:
        for model in models:
            for round_index in range(rounds):
                for runner in list(runners):  # alternate: A B C, A B C, ...
                    try:
                        result = _worker(runner, model, size, frames, Path(work))
                    except RuntimeError as exc:
                        if not _is_ours(runner):
                            # a peer that fails here is reported, not fatal
                            runners.remove(runner)
                            missing[LABELS[runner]] = f"failed on {model}: {exc}"
                            continue
                        raise SystemExit(f"{runner} on {model} failed: {exc}") from None
                    results.setdefault((model, runner), []).append(result)
                    print(f"round {round_index + 1}/{rounds} {model:22} {runner:6} "
                          f"{result['s_per_frame']:.3f} s/frame", flush=True)
    report(results, runners, missing, models, size, frames, rounds, name, out_dir)


def _worker(runner: str, model: str, size: tuple[int, int], frames: int, work: Path, *,
            overlap: int | None = None) -> dict:
    """One run in a fresh process. Raises RuntimeError with the last line of its error
    output (the end of which is printed)."""
    command = [sys.executable, __file__, "--worker", json.dumps(
        {"runner": runner, "model": model, "width": size[0], "height": size[1],
         "frames": frames, "workdir": str(work), "overlap": overlap})]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["(no message)"]
        print(f"{runner} on {model} failed:", *lines[-20:], sep="\n", file=sys.stderr)
        raise RuntimeError(lines[-1])
    return json.loads(done.stdout.strip().splitlines()[-1])


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


def report(results, runners, missing, models, size, frames, rounds, name, out_dir) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    peers_ = [r for r in runners if not _is_ours(r)]
    lines = [f"# CPU benchmark: {size[0]}x{size[1]} -> x4, {frames} frames per run (after "
             f"{WARM_UP_FRAMES} untimed), "
             f"{rounds} alternating rounds, medians",
             "", f"- date: {datetime.date.today().isoformat()}", f"- machine: {_machine()}",
             f"- versions: {_versions()}",
             "- each run in its own process, one VapourSynth thread, whole frame as one tile;"
             " peak RSS is the worker process's maximum resident size",
             "- Real-ESRGAN inference: its RealESRGANer.enhance (tile 0, pre_pad 0, fp32) on "
             "the same frame as the 8-bit BGR image it takes, same weights", ""]
    lines += ["| model | runner | s/frame (median) | fps | vs fastest peer | pipeline "
              "efficiency | peak RSS (MB) |", "|---|---|---|---|---|---|---|"]
    chart: dict[str, dict[str, float]] = {}
    for model in models:
        medians = {r: statistics.median(x["s_per_frame"] for x in results[(model, r)])
                   for r in runners}
        fastest_peer = min((medians[r] for r in peers_), default=None)
        for runner in runners:
            rows = results[(model, runner)]
            efficiencies = [x["efficiency"] for x in rows if x["efficiency"] is not None]
            efficiency_text = (f"{statistics.median(efficiencies):.3f}" if efficiencies
                               else "-")
            ratio = f"{fastest_peer / medians[runner]:.2f}x" if fastest_peer else "-"
            peak = max(x["peak_rss_mb"] for x in rows)
            lines.append(f"| {model} | {LABELS[runner]} | {medians[runner]:.3f} | "
                         f"{1 / medians[runner]:.2f} | {ratio} | {efficiency_text} | "
                         f"{peak:.0f} |")
            chart.setdefault(model, {})[LABELS[runner]] = 1 / medians[runner]
    lines += ["", "'vs fastest peer' > 1 means faster than the fastest peer.", "",
              "Not measured in this run:"]
    lines += [f"- {name}: {reason}" for name, reason in missing.items()]
    stem = name or ("mac" if sys.platform == "darwin" else "cpu-linux")
    table = out_dir / f"{stem}.md"
    table.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    _chart(chart, out_dir / f"{stem}.png", f"{size[0]}x{size[1]} x4 on {_machine()}")
    print(f"\nwrote {table} and {out_dir / f'{stem}.png'}")


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", action="store_true", help="compare with vs-mlrt runtimes")
    parser.add_argument("--sizes", default="1920x1080,640x360", help="part 1 frame sizes")
    parser.add_argument("--size", default="320x180", help="part 2 frame size")
    parser.add_argument("--models", default="realesr-animevideov3,random-compact,"
                        "realesrgan-x4plus,random-rrdb", help="part 2 models")
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--overlap", type=int, default=16)
    parser.add_argument("--out-name", help="file name stem in docs/benchmarks/ (default "
                        "cpu-linux, or mac on macOS)")
    parser.add_argument("--out-dir", default=str(DEFAULT_OUT_DIR))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        job = json.loads(args.worker)
        print(json.dumps(run_once(job["runner"], job["model"], job["width"], job["height"],
                                  job["frames"], Path(job["workdir"]), job.get("overlap"))))
        return 0
    if args.peers:
        width, height = (int(v) for v in args.size.split("x"))
        peers(args.models.split(","), (width, height), args.frames or 2, args.rounds,
              args.out_name, Path(args.out_dir))
    else:
        sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
        efficiency(sizes, args.frames or 2, args.overlap)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
