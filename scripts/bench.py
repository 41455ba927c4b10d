"""Benchmark: frames per second, pipeline efficiency and compute waste of the filter.

Pipeline efficiency is the time spent inside backend calls divided by the wall time per
frame: what the tiling, format conversion and stitching around the network cost. Frames
are requested one at a time (one VapourSynth thread) so the two times are comparable.

    python scripts/bench.py                      # 1920x1080 and 640x360, torch CPU
    python scripts/bench.py --sizes 640x360 --frames 5 --model realesr-animevideov3
"""

from __future__ import annotations

import argparse
import platform
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import vapoursynth as vs

from vs_coreml_esrgan import choose_tile_size, plan_tiles
from vs_coreml_esrgan.backends import Backend
from vs_coreml_esrgan.backends.torch_backend import create_torch_backend
from vs_coreml_esrgan.checkpoint import load_model
from vs_coreml_esrgan.filter import apply_backend
from vs_coreml_esrgan.network_spec import NetworkSpec
from vs_coreml_esrgan.networks import build_network


@dataclass
class TimedBackend:
    """Wraps a backend and adds up the wall time spent inside its calls."""

    inner: Backend
    seconds: float = 0.0
    calls: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def scale(self) -> int:
        return self.inner.scale

    @property
    def input_dtype(self) -> np.dtype:
        return self.inner.input_dtype

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        try:
            return self.inner(tiles)
        finally:
            with self._lock:
                self.seconds += time.perf_counter() - start
                self.calls += 1


def random_compact() -> torch.nn.Module:
    """realesr-animevideov3's shape (x4, 16 convs, 64 features) with random weights."""
    torch.manual_seed(0)
    spec = NetworkSpec(arch="srvgg", scale=4, num_conv=16, num_feat=64)
    return spec, build_network(spec)


def bench_size(network, spec, width: int, height: int, frames: int, overlap: int,
               tile: tuple[int, int] | None, batch: int, fmt: int) -> dict:
    core = vs.core
    tile = tile or choose_tile_size(width, height, overlap, multiple_of=spec.multiple_of)
    plan = plan_tiles(width, height, tile, overlap, spec.scale)
    timed = TimedBackend(create_torch_backend(network, spec.scale, device="cpu"))
    # Network cost does not depend on pixel values, so a blank clip measures it fairly.
    clip = core.std.BlankClip(format=fmt, width=width, height=height, length=frames + 1)
    out = apply_backend(clip, timed, plan, batch=batch)
    out.get_frame(0)  # warm-up: first-call allocations and torch's kernel selection
    timed.seconds, timed.calls = 0.0, 0
    start = time.perf_counter()
    for n in range(1, frames + 1):
        out.get_frame(n)
    wall = time.perf_counter() - start
    return {"size": f"{width}x{height}", "tile": f"{tile[0]}x{tile[1]}",
            "tiles": plan.num_tiles, "waste": plan.compute_waste, "fps": frames / wall,
            "s_per_frame": wall / frames, "efficiency": timed.seconds / wall,
            "format": core.get_video_format(fmt).name}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1920x1080,640x360")
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--overlap", type=int, default=16)
    parser.add_argument("--tile", type=int, default=None, help="square tile (default: auto)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--model", default=None,
                        help="model name or path (default: random-weight SRVGGNetCompact x4)")
    parser.add_argument("--format", default="YUV420P8", help="input format, e.g. RGBS")
    args = parser.parse_args()
    vs.core.num_threads = 1
    if args.model:
        from vs_coreml_esrgan.filter import _model_path

        loaded = load_model(_model_path(args.model))
        spec, network, label = loaded.spec, loaded.network, args.model
    else:
        spec, network = random_compact()
        label = "random SRVGGNetCompact x4 (16 convs, 64 feat)"
    fmt = getattr(vs.PresetVideoFormat, args.format.upper())
    print(f"model: {label}; backend torch cpu fp32; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {platform.processor() or platform.machine()}; "
          f"overlap {args.overlap}, batch {args.batch}, {args.frames} frames, "
          f"input {args.format}, one VapourSynth thread")
    print("| frame | tile | tiles | compute waste | s/frame | fps | pipeline efficiency |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.lower().split("x"))
        tile = (args.tile, args.tile) if args.tile else None
        row = bench_size(network, spec, width, height, args.frames, args.overlap, tile,
                         args.batch, int(fmt))
        print(f"| {row['size']} | {row['tile']} | {row['tiles']} | {row['waste']:.3f} | "
              f"{row['s_per_frame']:.2f} | {row['fps']:.3f} | {row['efficiency']:.3f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
