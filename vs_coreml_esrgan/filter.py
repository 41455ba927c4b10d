"""The VapourSynth filter: ``upscale(clip, model, ...)``.

The only module that puts clip, model, tiling and backend together. Everything is
validated when the filter is created; each frame then runs read → tile → infer → stitch →
write.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import vapoursynth as vs

from . import colour, tiling
from .backends import Backend, BackendError, fallback
from .catalogue import DEFAULT_MODEL, is_model_name, resolve_model
from .memory import activation_values, check_fits, package_activation_values
from .network_spec import FALLBACK_OVERLAP, ModelError, NetworkSpec
from .render import Setup, stitched_format, upscale_rgb
from .tile_size import check_tile_overlap, checked_tile_size, is_int, tile_pair

if TYPE_CHECKING:
    from .backends.coreml_units import Retile

BACKENDS = ("auto", "torch", "coreml", "mil")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
PREFERENCES = ("auto", "speed", "efficiency")
_NAME = "upscale"
_SMALLER = "use a smaller tile or batch (tile=None picks one of at most 512)"


def upscale(clip: vs.VideoNode, model: str | os.PathLike[str] | None = None, *,
            tile: int | Sequence[int] | None = None, overlap: int | None = None,
            backend: str = "auto", device: str | None = None, precision: str = "auto",
            batch: int | None = None, compute_units: str | None = None,
            prefer: str | None = None) -> vs.VideoNode:
    """Upscale ``clip`` with a Real-ESRGAN network.

    ``clip``: constant format and size; RGB (8-16 bit integer, half, single), YUV or GRAY
    (each frame converted to RGB with its own ``_Matrix`` / ``_Range``, BT.709 limited where
    absent, and back; see :mod:`vs_coreml_esrgan.colour`). The result has the input's
    format at ``scale`` times the size, with the input's frame properties.
    ``model``: a model name (see ``vs-coreml-esrgan models``; None means
    'realesr-animevideov3'), a checkpoint of any architecture spandrel knows (``.pth``,
    ``.pt``, ``.ckpt``, ``.safetensors``: ESRGAN, Compact, SPAN, RealPLKSR, DAT, ...),
    an ncnn ``.param`` with its ``.bin`` beside it, or a converted ``.mlpackage``.
    ``tile``: the network's input size, overlap included: an int or ``(width, height)``;
    None picks the size that wastes least compute with tiles of at most 512 (a
    ``.mlpackage`` has its own, which ``tile`` must match if given). A tile x batch whose
    estimated memory exceeds the machine's is refused.
    ``overlap``: context pixels on each inner side of a tile (cross-faded, no seams); None:
    the model's receptive radius where it is known and at most 32 (tiled output then equals
    whole-frame output), else 16 (see ``vs-coreml-esrgan inspect MODEL``).
    ``backend``: 'auto' (off macOS torch, or mil for a ``.mlpackage``; on macOS the first
    that runs correctly of Core ML, torch on MPS (fp16) and torch on the CPU, or for a
    ``.mlpackage`` Core ML then mil, each step down reported in one line on stderr; see
    :mod:`vs_coreml_esrgan.backends.fallback`), 'torch', 'coreml' (macOS; strict: an error
    rather than another backend) or 'mil' (the portable ML Program executor). With 'coreml'
    or 'mil' a checkpoint is converted on first use into the user cache.
    ``device``: a torch device ('cpu', 'cuda', 'mps'); ``precision``: 'auto', 'fp32',
    'fp16' or 'bf16' ('auto': fp16 for Core ML, CUDA and MPS; on the CPU bf16 for clips
    of 8 bits where it computes bfloat16 natively (AVX512-BF16 or AMX), else fp32; 'bf16'
    is for the torch backend only, a package's own precision is the only one it takes);
    ``batch``: tiles per backend call (None: 1, or a package's own; at most a frame's
    tile count is used);
    ``compute_units``: for coreml, 'auto' (None: among the Neural Engine, the GPU and both,
    the one ``prefer`` picks of those that ran and computed what the executor computes on
    a photograph, tried once per model and Mac in child processes and remembered), 'ane',
    'gpu', 'cpu' or 'all' (checked the same way; one that fails is an error naming it).
    ``prefer``: 'speed' (the fastest), 'efficiency' (the Neural Engine when it is at most
    twice as slow as the fastest: several times less energy) or 'auto' (None: efficiency
    on a Mac with a battery, else speed).
    Raises vapoursynth.Error, prefixed 'upscale: ', for any bad argument, and while a
    frame is computed for a frame whose colour properties cannot be followed, a frame
    holding NaN or infinity, and a network output that is not finite (never a black or
    NaN frame).
    """
    return upscale_named(_NAME, clip, model, tile=tile, overlap=overlap, backend=backend,
                         device=device, precision=precision, batch=batch,
                         compute_units=compute_units, prefer=prefer)


def upscale_named(name: str, clip: vs.VideoNode,
                  model: str | os.PathLike[str] | None = None, *,
                  tile: int | Sequence[int] | None = None, overlap: int | None = None,
                  backend: str = "auto", device: str | None = None, precision: str = "auto",
                  batch: int | None = None, compute_units: str | None = None,
                  prefer: str | None = None) -> vs.VideoNode:
    """:func:`upscale`, with its errors (at creation and per frame) prefixed ``name``."""
    try:
        _check_clip(clip)
        rgb, restore = colour.to_rgb(clip, name)  # frame 0's colour properties first
        setup = _prepare(clip, model, tile=tile, overlap=overlap, backend=backend,
                         device=device, precision=precision, batch=batch,
                         compute_units=compute_units, prefer=prefer)
    except (ValueError, TypeError, OSError) as exc:
        raise vs.Error(f"{name}: {exc}") from None
    return restore(upscale_rgb(rgb, setup, name, stitched_format(clip)))


def apply_backend(clip: vs.VideoNode, backend: Backend, plan: tiling.TilePlan, *,
                  batch: int = 1) -> vs.VideoNode:
    """Upscale a validated clip with a ready backend and tile plan (no argument checks).

    For callers that build or wrap backends themselves (benchmarks, other front ends).
    """
    rgb, restore = colour.to_rgb(clip, _NAME)
    setup = Setup(backend=backend, plan=plan, batch=batch)
    return restore(upscale_rgb(rgb, setup, _NAME, stitched_format(clip)))


def _check_clip(clip: object) -> None:
    if not isinstance(clip, vs.VideoNode):
        raise TypeError(f"expected a video clip (vapoursynth.VideoNode), got "
                        f"{type(clip).__name__}")
    fmt = clip.format
    if fmt is None or fmt.id == vs.PresetVideoFormat.NONE or 0 in (clip.width, clip.height):
        raise ValueError("the clip has variable format or size; make it constant first, "
                         "e.g. with resize.Bicubic(width=..., height=..., format=...)")
    if fmt.color_family not in (vs.RGB, vs.YUV, vs.GRAY):
        raise ValueError(f"expected an RGB, YUV or GRAY clip, got {fmt.name}")
    if fmt.sample_type == vs.INTEGER and not 8 <= fmt.bits_per_sample <= 16:
        raise ValueError(f"expected 8 to 16 bit integer samples, got {fmt.name}")


def _prepare(clip: vs.VideoNode, model: str | os.PathLike[str] | None, *,
             tile: int | Sequence[int] | None, overlap: int, backend: str,
             device: str | None, precision: str, batch: int | None,
             compute_units: str | None, prefer: str | None = None) -> Setup:
    if overlap is not None and (not is_int(overlap) or overlap < 0):
        raise ValueError(f"overlap must be a non-negative int, got {overlap!r}")
    if batch is not None and (not is_int(batch) or batch < 1):
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    overlap = None if overlap is None else int(overlap)
    batch = None if batch is None else int(batch)
    if tile is None and overlap is not None and 2 * overlap + 1 > tiling.DEFAULT_MAX_TILE:
        raise ValueError(f"overlap {overlap} needs tiles of at least {2 * overlap + 1} "
                         f"pixels, more than the automatic tile size's limit of "
                         f"{tiling.DEFAULT_MAX_TILE}; pass tile= or use a smaller overlap")
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if prefer is not None and prefer not in PREFERENCES:
        raise ValueError(f"prefer must be one of {', '.join(PREFERENCES)}, got {prefer!r}")
    path = _model_path(model)
    is_package = os.fspath(path).endswith(".mlpackage")
    if is_package and not os.path.exists(path):  # not a backend's failure: none steps down
        raise ModelError(f"Core ML package {os.fspath(path)!r} does not exist")
    chosen = _choose_backend(backend, is_package)
    if chosen == "auto":  # several routes (macOS); an option of one backend names it
        chosen = "coreml" if compute_units is not None else \
            "torch" if device is not None or precision == "bf16" else "auto"
    if compute_units is not None and chosen != "coreml":
        raise ValueError(f"compute_units applies to backend 'coreml' only, not {chosen!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got "
                         f"{precision!r}")
    if precision == "bf16" and chosen != "torch":
        raise ValueError(f"precision 'bf16' applies to backend 'torch' only (CPU or CUDA); "
                         f"backend {chosen!r} runs Core ML programs, which compute in fp16 "
                         "or fp32")
    if chosen == "auto":
        return _prepare_fallback(clip, path, is_package, tile=tile, overlap=overlap,
                                 precision=precision, batch=batch, prefer=prefer)
    if chosen == "torch":
        if is_package:
            raise ValueError("a .mlpackage runs with backend 'coreml' (macOS) or 'mil'; "
                             "backend 'torch' needs a checkpoint or ncnn model")
        return _prepare_torch(clip, path, tile=tile, overlap=overlap, device=device,
                              precision=precision, batch=batch or 1)
    if device is not None:
        raise ValueError(f"device applies to backend 'torch' only, not {chosen!r}")
    if chosen == "coreml":  # before converting: that takes minutes for a large model
        from .backends.coreml_backend import require_macos

        require_macos()
    package, retile = (path, None) if is_package else _convert_for(
        clip, path, tile=tile, overlap=overlap, precision=precision, batch=batch or 1)
    return _prepare_package(clip, package, chosen, tile=tile, overlap=overlap,
                            batch=batch, compute_units=compute_units,
                            precision=precision if is_package else "auto", prefer=prefer,
                            retile=retile)


def _choose_backend(backend: str, is_package: bool) -> str:
    """The one backend to use, or 'auto' where backends.fallback orders several."""
    order = fallback.routes(backend, is_package=is_package, on_mac=sys.platform == "darwin")
    return order[0].backend if len(order) == 1 else "auto"


def _prepare_fallback(clip: vs.VideoNode, path: str | os.PathLike[str], is_package: bool,
                      *, tile: int | Sequence[int] | None, overlap: int | None,
                      precision: str, batch: int | None, prefer: str | None) -> Setup:
    """Backend 'auto' on macOS: the routes of backends.fallback, the first that runs
    correctly; torch on MPS only after its parity check (backends.torch_gate)."""
    def attempt(route: fallback.Route) -> Setup:
        if route.backend in ("coreml", "mil"):
            package, retile = (path, None) if is_package else _convert_for(
                clip, path, tile=tile, overlap=overlap, precision=precision,
                batch=batch or 1)
            return _prepare_package(clip, package, route.backend, tile=tile,
                                    overlap=overlap, batch=batch, compute_units=None,
                                    precision=precision if is_package else "auto",
                                    prefer=prefer, retile=retile)
        return _prepare_torch(clip, path, tile=tile, overlap=overlap, device=route.device,
                              precision=precision, batch=batch or 1,
                              gate=route.device == "mps")

    order = fallback.routes("auto", is_package=is_package, on_mac=True)
    return fallback.first_that_runs(order, attempt, _notify)


def _prepare_torch(clip: vs.VideoNode, path: str | os.PathLike[str], *,
                   tile: int | Sequence[int] | None, overlap: int, device: str | None,
                   precision: str, batch: int, gate: bool = False) -> Setup:
    """The torch backend; ``gate``: only after its parity check against torch float32 on
    the CPU in a child process (backends.torch_gate), BackendError when it fails."""
    from .backends.torch_backend import (
        cpu_has_native_bf16,
        create_torch_backend,
        default_device,
        resolve_precision,
    )
    from .checkpoint import load_model

    loaded = load_model(path)
    spec = loaded.spec
    overlap = spec.default_overlap if overlap is None else overlap
    tile_size = checked_tile_size(tile, clip.width, clip.height, overlap, spec)
    # torch takes any size: a tile larger than the frame is the frame (no padding to
    # change its edges)
    tile_size = tiling.fit_tile_to_frame(tile_size, clip.width, clip.height,
                                         multiple_of=spec.multiple_of, minimum=spec.minimum,
                                         square=spec.square)
    plan = tiling.plan_tiles(clip.width, clip.height, tile_size, overlap, spec.scale)
    batch = min(batch, plan.num_tiles)  # more would only repeat the last tile
    check_fits(tile_size, batch, activation_values(loaded.network, spec), hint=_SMALLER)
    explicit = precision != "auto"
    if not explicit and (device is None or isinstance(device, str)):
        precision = resolve_precision(precision, device or default_device())
        if precision == "bf16" and _deeper_than_8_bits(clip):
            # bfloat16 keeps 8 significant bits: about one 8-bit step near white, four
            # 10-bit steps, so deeper sources would band (posterise); fp32 keeps them
            precision = "fp32"
    runner = create_torch_backend(loaded.network, spec.scale, device=device,
                                  precision=_precision_for(spec, precision,
                                                           explicit=explicit))
    if gate:
        from .backends.torch_gate import check_torch_device
        from .checkpoint import model_sha256

        check_torch_device(path, runner.device.type, runner.precision, model_sha256(path))
    if runner.precision == "bf16" and runner.device.type == "cpu" \
            and not cpu_has_native_bf16():
        _notify("precision 'bf16' on a CPU without native bfloat16 (AVX512-BF16 or AMX): "
                "PyTorch emulates it, several times slower than fp32")
    return Setup(backend=runner, plan=plan, batch=batch)


def _convert_for(clip: vs.VideoNode, path: str | os.PathLike[str], *,
                 tile: int | Sequence[int] | None, overlap: int, precision: str,
                 batch: int) -> tuple[Path, Retile | None]:
    """A checkpoint's Core ML package for this clip's tile size, from the cache, and for
    an automatic tile the same model at other tiles (``coreml_units.Retile``: a Neural
    Engine that fails to compile the tile is tried once at a smaller one), else None."""
    from .checkpoint import load_model
    from .coreml.cached import cached_package
    from .coreml.tile_rule import coreml_tile_size

    loaded = load_model(path)
    overlap = loaded.spec.default_overlap if overlap is None else overlap
    if tile is None:
        tile_size = coreml_tile_size(clip.width, clip.height, overlap, loaded.network,
                                     loaded.spec)
    else:
        tile_size = checked_tile_size(tile, clip.width, clip.height, overlap, loaded.spec)
    precision = _precision_for(loaded.spec, precision)
    plan = tiling.plan_tiles(clip.width, clip.height, tile_size, overlap, loaded.spec.scale)
    batch = min(batch, plan.num_tiles)  # more would only repeat the last tile
    check_fits(tile_size, batch, activation_values(loaded.network, loaded.spec),
               hint=_SMALLER)
    kind = "fp32" if precision == "fp32" else "fp16"
    package = cached_package(loaded, tile=tile_size, batch=batch, precision=kind,
                             notify=_notify)
    if tile is not None:  # the user's tile is kept
        return package, None
    from .backends.coreml_units import Retile
    from .coreml.tile_rule import smaller_tile

    return package, Retile(
        smaller=lambda given: smaller_tile(given, overlap, loaded.spec),
        package=lambda given: cached_package(loaded, tile=given, batch=batch, precision=kind,
                                             notify=_notify))


def _notify(message: str) -> None:
    """Progress and choices made while the filter is set up: one line on stderr."""
    print(f"vs_coreml_esrgan: {message}", file=sys.stderr, flush=True)


def _prepare_package(clip: vs.VideoNode, package: str | os.PathLike[str], chosen: str, *,
                     tile: int | Sequence[int] | None, overlap: int, batch: int | None,
                     compute_units: str | None, precision: str,
                     prefer: str | None = None, retile: Retile | None = None) -> Setup:
    from .coreml.package import read_package

    info = read_package(package)
    if precision != "auto" and precision != info.precision:
        raise ValueError(f"precision {precision!r} disagrees with the package's compiled "
                         f"precision {info.precision!r}; omit precision= or convert again "
                         "with --precision")
    if tile is not None:
        wanted = tile_pair(tile)
        if wanted != info.tile:
            raise ValueError(f"tile {wanted[0]}x{wanted[1]} disagrees with the package's "
                             f"compiled tile {info.tile[0]}x{info.tile[1]}; omit tile= or "
                             "convert again with --tile")
    if batch is not None and batch != info.batch:
        raise ValueError(f"batch {batch} disagrees with the package's compiled batch "
                         f"{info.batch}; omit batch= or convert again with --batch")
    check_fits(info.tile, info.batch, package_activation_values(info),
               hint="convert the model again with a smaller --tile or --batch")
    if chosen == "coreml":
        from .backends.coreml_backend import create_coreml_backend
        from .coreml.package import check_weights

        check_weights(package)  # a damaged weight blob, named, before Core ML loads it

        runner: Backend = create_coreml_backend(package, compute_units=compute_units,
                                                prefer=prefer, notify=_notify,
                                                retile=retile)
        info = runner.info  # a smaller tile where only that ran on the Neural Engine
    else:
        from .backends.mil_backend import create_mil_backend

        runner = create_mil_backend(package)
    if overlap is None:
        overlap = int(info.metadata.get("overlap", FALLBACK_OVERLAP))
    check_tile_overlap(info.tile, clip.width, clip.height, overlap,
                       fix="convert the model again with a larger --tile")
    plan = tiling.plan_tiles(clip.width, clip.height, info.tile, overlap, info.scale)
    return Setup(backend=runner, plan=plan, batch=info.batch)


def _model_path(model: str | os.PathLike[str] | None) -> str | os.PathLike[str]:
    if model is None:
        try:
            return resolve_model(DEFAULT_MODEL).path
        except ModelError as exc:
            raise ModelError(f"no model given and the default model is not available: "
                             f"{exc}") from None
    if not isinstance(model, str | os.PathLike):
        raise TypeError(f"model must be a name or a path, got {type(model).__name__}")
    if isinstance(model, str) and is_model_name(model):
        return resolve_model(model).path
    return model


def _deeper_than_8_bits(clip: vs.VideoNode) -> bool:
    """Whether the clip holds more than 8 bits a sample (deeper integers, or floats)."""
    fmt = clip.format
    return fmt.sample_type == vs.FLOAT or fmt.bits_per_sample > 8


def _precision_for(spec: NetworkSpec, precision: str, *, explicit: bool = True) -> str:
    """'fp16' and 'bf16' as given where the network supports them (spandrel says which);
    'auto' becomes 'fp32' for a network without half-precision support. An explicit
    precision the network does not support is a ValueError; one that 'auto' resolved to
    (``explicit`` False) falls back to 'fp32'."""
    supported = {"fp16": spec.supports_half, "bf16": spec.supports_bfloat16}
    if precision == "auto":
        return precision if spec.supports_half else "fp32"
    if supported.get(precision, True):
        return precision
    if not explicit:
        return "fp32"
    raise ValueError(f"{spec.describe()} does not support {precision} (spandrel says so); "
                     "use precision='fp32' or 'auto'")


__all__ = ["BackendError", "ModelError", "upscale", "upscale_named"]
