"""Peers: the same clip and the same weights through our backends (torch at its default
precision and at fp32, mil, and on macOS Core ML with each compute-unit setting) and
vs-mlrt's ONNX Runtime (CPU, fp32; on macOS also its Core ML provider) and OpenVINO (at
its CPU plugin's default precision, which is bf16 on CPUs with native bfloat16, and
forced to f32) runtimes (an ONNX export of the same network) and, where installed,
Real-ESRGAN's own inference (``pip install realesrgan``), whole frames (one tile each, so
only the network runtimes differ), two ways: all runners in one process under VapourSynth
with its default thread count, and each run in its own process (clean peak memory). Runs
alternate (A B C A B C ...); medians are reported with the matched-precision ratios, and
a markdown report and a PNG chart are written to docs/benchmarks/.

    python scripts/bench.py --peers   # needs vapoursynth-mlrt-ort/-ov, onnx
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import tempfile
from pathlib import Path

from bench import common
from bench.runners import (
    LABELS,
    _is_ours,
    _versions,
    _worker,
    _worker_together,
    label,
    our_runners,
    precisions,
)

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

def report(results: Results, facts: dict[str, str], missing: dict[str, str],
           models: list[tuple[str, tuple[int, int]]], frames: int, rounds: int,
           methods: list[str], name: str | None, out_dir: Path) -> None:
    from vs_coreml_esrgan.backends.torch_backend import cpu_has_native_bf16

    out_dir.mkdir(parents=True, exist_ok=True)
    threads = {row["vs_threads"] for rows in results.values() for row in rows}
    medians = {key: statistics.median(row["s_per_frame"] for row in rows)
               for key, rows in results.items()}
    lines = [f"# CPU benchmark: whole frames -> x4, {frames} frames per run (after "
             f"{common.WARM_UP_FRAMES} untimed), {rounds} alternating rounds, medians", "",
             f"- date: {datetime.date.today().isoformat()}", f"- machine: {common.machine()}",
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
    _chart(chart, out_dir / f"{stem}.png", f"x4, {method_names[methods[0]]}, on {common.machine()}")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="320x180",
                        help="frame size of models named without @WxH")
    parser.add_argument("--models", default="realesr-animevideov3@480x270,"
                        "realesrgan-x4plus@192x108",
                        help="models, each NAME or NAME@WxH (catalogue names, "
                        "random-compact, random-rrdb)")
    parser.add_argument("--method", choices=("both", "together", "process"), default="both",
                        help="all runners in one process, one process per run, or both "
                        "(default)")
    parser.add_argument("--runners", help="only these, comma-separated (e.g. "
                        "torch,torch-fp32,ort,ov,ov-f32; default: all this machine has)")
    parser.add_argument("--vs-threads", type=int, default=None,
                        help="VapourSynth threads (default: its own default, as vspipe)")
    parser.add_argument("--frames", type=int, default=4, help="timed frames per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out-name", help="file name stem in docs/benchmarks/ (default "
                        "cpu-linux, or mac on macOS)")
    parser.add_argument("--out-dir", default=str(common.DEFAULT_OUT_DIR))
    args = parser.parse_args(argv)
    models = [(name, common.size(size) if size else common.size(args.size))
              for name, _, size in (m.partition("@") for m in args.models.split(","))]
    methods = ["together", "process"] if args.method == "both" else [args.method]
    peers(models, args.frames, args.rounds, methods, args.vs_threads, args.out_name,
          Path(args.out_dir), args.runners.split(",") if args.runners else None)
    return 0
