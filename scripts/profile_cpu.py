"""Where one frame's time goes on the CPU, per layer type, in each runtime's own profiler:
the network as our torch backend runs it (fp32, traced and frozen, channels_last), the
same frozen network through ``torch.jit.optimize_for_inference`` (oneDNN's blocked
layout), and ONNX Runtime and OpenVINO (f32 forced) on an ONNX export of the same
weights; the same frame, the same thread count, one process, runners alternating.

What `bench.py --peers` measures as a ratio under VapourSynth, this splits by operator.
The measuring process has no VapourSynth (vs-mlrt's plugins carry their own OpenVINO
build, which OpenVINO's Python package refuses to share a process with); the runtimes are
their Python packages at the versions vs-mlrt's plugins ship (vs-mlrt 17.1: pip install
onnxruntime==1.31.0 openvino==2026.4.1). A runtime not installed is left out, saying so.
Run it on an idle machine: it measures wall time.

    python scripts/profile_cpu.py --model realesr-animevideov3 --size 480x270
    python scripts/profile_cpu.py --model realesrgan-x4plus --size 192x108
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
from bench import _onnx, _size, load_network  # scripts/ is first on sys.path

Profile = dict[str, float]  # layer type -> milliseconds per frame


def export(model: str, frame: np.ndarray, work: Path) -> None:
    """The frozen TorchScript module our backend would run on ``frame`` (``ours.pt``)
    and the ONNX export the vs-mlrt runners are given, into ``work``."""
    import torch

    from vs_coreml_esrgan.backends.torch_backend import create_torch_backend

    spec, network = load_network(model)
    backend = create_torch_backend(network, spec.scale, device="cpu", precision="fp32")
    x = torch.from_numpy(frame).contiguous(memory_format=torch.channels_last)
    torch.jit.save(backend._frozen_for(x), str(work / "ours.pt"))
    _, network = load_network(model)
    _onnx(model, network, work).rename(work / "network.onnx")
    np.save(work / "frame.npy", frame)


def runners(work: Path, threads: int) -> tuple[dict[str, Callable], list[str]]:
    """name -> run(frame) -> (output, profile of this call or None), and what is left
    out. Loaded in the measuring process only."""
    import torch

    torch.set_num_threads(threads)
    found: dict[str, Callable] = {}
    left_out = []
    ours = torch.jit.load(str(work / "ours.pt"))
    found["ours: torch frozen"] = _torch_runner(ours)
    with torch.no_grad():
        found["torch + optimize_for_inference"] = _torch_runner(
            torch.jit.optimize_for_inference(torch.jit.load(str(work / "ours.pt"))))
    for name, make in (("ONNX Runtime", _ort_runner), ("OpenVINO f32", _ov_runner)):
        try:
            found[name] = make(work / "network.onnx", threads, work)
        except ImportError as exc:
            left_out.append(f"{name}: not installed ({exc})")
    return found, left_out


def _torch_runner(module) -> Callable:
    import torch
    from torch.profiler import ProfilerActivity, profile

    def run(frame: np.ndarray, profiled: bool):
        x = torch.from_numpy(frame).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if not profiled:
                return module(x).contiguous().numpy(), None
            with profile(activities=[ProfilerActivity.CPU]) as trace:
                out = module(x).contiguous().numpy()
        return out, {event.key: event.self_cpu_time_total / 1000
                     for event in trace.key_averages() if event.self_cpu_time_total > 0}
    return run


def _ort_runner(onnx: Path, threads: int, work: Path) -> Callable:
    import onnxruntime as ort

    def session(profiled: bool):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.enable_profiling = profiled
        options.profile_file_prefix = str(work / "ort")
        return ort.InferenceSession(str(onnx), options, providers=["CPUExecutionProvider"])

    plain = session(False)

    def run(frame: np.ndarray, profiled: bool):
        if not profiled:
            return plain.run(None, {"input": frame})[0], None
        traced = session(True)
        traced.run(None, {"input": frame})  # warm; the second call is the one reported
        out = traced.run(None, {"input": frame})[0]
        events = json.loads(Path(traced.end_profiling()).read_text())
        last = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"][-1]
        layers: Profile = defaultdict(float)
        for event in events:
            if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") \
                    and last["ts"] <= event["ts"] <= last["ts"] + last["dur"]:
                layers[event["args"]["op_name"]] += event["dur"] / 1000
        return out, dict(layers)
    return run


def _ov_runner(onnx: Path, threads: int, work: Path) -> Callable:
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads}
    plain = core.compile_model(str(onnx), "CPU", config).create_infer_request()
    traced = core.compile_model(str(onnx), "CPU", {**config, "PERF_COUNT": True}
                                ).create_infer_request()

    def run(frame: np.ndarray, profiled: bool):
        request = traced if profiled else plain
        out = request.infer({0: frame})[0].copy()
        if not profiled:
            return out, None
        layers: Profile = defaultdict(float)
        for node in request.profiling_info:  # this call's, per node
            if node.status == ov.ProfilingInfo.Status.EXECUTED:
                layers[f"{node.node_type} [{node.exec_type}]"] += \
                    node.real_time.total_seconds() * 1000
        return out, dict(layers)
    return run


def measure(work: Path, threads: int, rounds: int, top: int) -> None:
    """In a process without VapourSynth: each runner warmed twice, then ``rounds`` rounds
    of one call each, runners alternating; then one profiled call each."""
    found, left_out = runners(work, threads)
    frame = np.load(work / "frame.npy")
    for run in found.values():
        for _ in range(2):
            run(frame, False)
    times: dict[str, list[float]] = defaultdict(list)
    for _ in range(rounds):
        for name, run in found.items():
            start = time.perf_counter()
            run(frame, False)
            times[name].append((time.perf_counter() - start) * 1000)
    reference = None
    for name, run in found.items():
        out, layers = run(frame, True)
        reference = out if reference is None else reference
        ms = statistics.median(times[name])
        print(f"\n## {name}: {ms:.0f} ms per frame, median of {rounds} ({', '.join(
            f'{t:.0f}' for t in times[name])}); profiled call {sum(layers.values()):.0f} ms"
              f"; largest difference from ours {float(np.abs(out - reference).max()):.2g}")
        for kind, spent in sorted(layers.items(), key=lambda item: -item[1])[:top]:
            print(f"  {spent:8.1f} ms  {kind}")
    for line in left_out:
        print(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="realesr-animevideov3")
    parser.add_argument("--size", default="480x270", help="WxH of the frame")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--top", type=int, default=8, help="layer types shown per runtime")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # the measuring process
    args = parser.parse_args()
    if args.measure:
        measure(Path(args.measure), args.threads, args.rounds, args.top)
        return 0
    width, height = _size(args.size)
    frame = np.random.default_rng(0).random((1, 3, height, width), dtype=np.float32)
    with tempfile.TemporaryDirectory() as work:
        export(args.model, frame, Path(work))
        print(f"{args.model} {width}x{height}, {args.threads} threads; per layer type: ms "
              "in one profiled call, as the runtime's profiler reports it", flush=True)
        return subprocess.run([sys.executable, __file__, "--measure", work, "--threads",
                               str(args.threads), "--rounds", str(args.rounds), "--top",
                               str(args.top)]).returncode


if __name__ == "__main__":
    raise SystemExit(main())
