"""Running one benchmark subject ("runner"): our backends through the filter, vs-mlrt's
runtimes, Real-ESRGAN's own inference; on a model (a catalogue name or a random network),
in a worker process (scripts/bench.py --worker) so each run starts clean."""

from __future__ import annotations

import contextlib
import functools
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench import common

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

def run_once(runner: str, model: str, width: int, height: int, frames: int,
             workdir: Path, overlap: int | None = None,
             vs_threads: int | None = None) -> dict:
    """Time ``frames`` frames (after common.WARM_UP_FRAMES untimed ones) through one runner.

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
    clip, plan = _source(model, width, height, common.WARM_UP_FRAMES + frames, overlap)
    if runner == "realesrgan":
        spec, network = load_network(model)
        return _run_realesrgan(model, spec, network, clip, frames, workdir)
    out, timed = build_runner(runner, model, clip, plan, workdir)
    common.fetch(out, 0, common.WARM_UP_FRAMES)
    if timed:
        timed.reset()
    first = common.WARM_UP_FRAMES
    wall, faults = common.timed_fetch(out, first, first + frames)
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
    clip, plan = _source(model, width, height, common.WARM_UP_FRAMES + rounds * frames, None)
    built = {runner: build_runner(runner, model, clip, plan, workdir) for runner in runners}
    for out, _ in built.values():
        common.fetch(out, 0, common.WARM_UP_FRAMES)
    results: dict[str, list[dict]] = {runner: [] for runner in runners}
    for round_index in range(rounds):
        first = common.WARM_UP_FRAMES + round_index * frames  # new frames: none from the cache
        for runner, (out, timed) in built.items():
            if timed:
                timed.reset()
            wall, faults = common.timed_fetch(out, first, first + frames)
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

def build_runner(runner: str, model: str, clip, plan, workdir: Path):
    """(output clip, common.TimedBackend or None) of one runner on ``clip``; each gets a fresh
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
        timed = common.TimedBackend(inner)
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
    for _ in range(common.WARM_UP_FRAMES):
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

def _run_worker(job: dict) -> dict:
    """One worker process running ``job``; its last line of output is the JSON answer.
    Raises RuntimeError with the last line of its error output (the end of which is
    printed)."""
    command = [sys.executable, str(common.ROOT / "scripts" / "bench.py"), "--worker",
               json.dumps(job)]
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


def worker_main(job: dict) -> dict:
    """The answer of one worker process (see _run_worker)."""
    if isinstance(job["runner"], list):
        return run_together(job["runner"], job["model"], job["width"], job["height"],
                            job["frames"], job["rounds"], Path(job["workdir"]),
                            job.get("vs_threads"))
    return run_once(job["runner"], job["model"], job["width"], job["height"],
                    job["frames"], Path(job["workdir"]), job.get("overlap"),
                    job.get("vs_threads"))
