"""The catalogue commands: ``inspect`` (a model or a package), ``models`` and ``cache``.

They answer from the catalogue and the files where they can: an official model's
description needs no PyTorch (catalogue.known_spec), so these commands start in a fraction
of a second; only a user's own model file is loaded to describe it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .backends import BackendError
from .network_spec import ModelError, NetworkSpec

PROG = "vs-coreml-esrgan"


def _resolve(model: str) -> Path:
    from .catalogue import is_model_name, resolve_model

    if is_model_name(model):
        return resolve_model(model).path
    return Path(model)


def cmd_inspect(args: argparse.Namespace) -> int:
    if not args.target.endswith(".mlpackage"):
        return _inspect_model(args.target)
    from collections import Counter

    from .coreml.package import check_weights, load_spec, read_package

    info = read_package(args.target)
    weights = check_weights(args.target)  # a damaged package fails here
    print(f"{info.path}")
    print(f"  input  {info.input_name}: {info.input_shape} {info.input_dtype}")
    print(f"  output {info.output_name}: {info.output_shape} {info.output_dtype}")
    for key, value in sorted(info.metadata.items()):
        print(f"  {key}: {value}")
    function = load_spec(args.target).mlProgram.functions["main"]
    ops = Counter(op.type for op in function.block_specializations[function.opset].operations
                  if op.type != "const")
    print("  operations: " + ", ".join(f"{name} x{count}" for name, count in sorted(ops.items())))
    print(f"  weights: {weights} tensors, all readable and finite")
    print(f"  device placement ({args.compute_units}): {_placement_text(args)}")
    return 0


def _placement_text(args: argparse.Namespace) -> str:
    """Core ML's plan as each device's share of the estimated cost, or why there is none."""
    if sys.platform != "darwin":
        return "needs macOS (Core ML's compute plan)"
    from .backends.coreml_backend import compiled_model
    from .backends.coreml_plan import placement

    try:
        return placement(compiled_model(args.target), args.compute_units).describe() \
            + " of the estimated cost"
    except BackendError as exc:
        return f"not available: {exc}"


def _describe(model: str) -> tuple[Path, NetworkSpec]:
    """A model's file and description: an official model's from the catalogue (no PyTorch
    needed, so `inspect NAME` answers at once), any other by loading it."""
    from .catalogue import is_model_name, known_spec, resolve_model

    if is_model_name(model):
        resolved = resolve_model(model)
        spec = known_spec(resolved)
        if spec is not None:
            return resolved.path, spec
    from .checkpoint import load_model

    loaded = load_model(_resolve(model))
    return loaded.path, loaded.spec


def _inspect_model(model: str) -> int:
    path, spec = _describe(model)
    radius = ("not computed (whole-input normalisation, attention or unknown)"
              if spec.receptive_radius is None else f"{spec.receptive_radius} pixels")
    exact = spec.receptive_radius is not None and spec.default_overlap >= spec.receptive_radius
    coreml = ("converts (parity tested)" if spec.coreml else
              "untested: `convert` tries and names the failing operation; use backend "
              "'torch'")
    print(path)
    for label, value in [
            ("architecture", f"{spec.describe()}"),
            ("scale", f"x{spec.scale} ({spec.num_in_ch} -> {spec.num_out_ch} channels)"),
            ("input size", spec.size_requirements),
            ("fp16", "supported" if spec.supports_half else
             "not supported: fp32 only (Core ML: GPU / CPU, not the Neural Engine)"),
            ("receptive radius", radius),
            ("default overlap", f"{spec.default_overlap}"
             + (" (tiled = whole frame)" if exact else " (cross-faded; not exact)")),
            ("tiling", spec.tiling),
            ("Core ML", coreml)]:
        print(f"  {label + ':':18}{value}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .cache import entries
    from .catalogue import KNOWN_MODELS, available_models, known_spec, user_model_dir

    known = {m.name for m in KNOWN_MODELS}
    found = available_models()
    print(f"{'name':26} {'scale':>5}  {'architecture':12} {'input size':22} {'fp16':4}  "
          f"{'Core ML':7} where")
    unreadable = []
    for model in found:
        try:
            spec = known_spec(model) or _load_spec(model.path)
        except (ModelError, OSError) as exc:  # one bad file must not hide the others
            unreadable.append(f"{model.path}: {str(exc).removeprefix(f'{model.path}: ')}")
            print(f"{model.name:26} {'?':>5}  {'unreadable':12} {model.origin}: {model.path}")
            continue
        print(f"{model.name:26} {'x' + str(spec.scale):>5}  {spec.arch:12} "
              f"{spec.size_requirements:22} {'yes' if spec.supports_half else 'no':4}  "
              f"{'yes' if spec.coreml else 'untested':7} {model.origin}: {model.path}")
    for problem in unreadable:
        print(f"{PROG}: warning: {problem}", file=sys.stderr)
    missing = sorted(known - {m.name for m in found})
    if missing:
        print(f"not installed: {', '.join(missing)} (pip install 'vs-coreml-esrgan[models]')")
    print(f"user model directory: {user_model_dir()}")
    print(f"architectures (spandrel {_spandrel_version()}): {', '.join(_architectures())}; "
          "Core ML conversion tested: ESRGAN, Compact, SPAN, RealPLKSR")
    cached = entries()
    print(f"cache: {len(cached)} entries, {sum(size for _, size in cached) / 1e6:.1f} MB")
    return 0


def _load_spec(path: Path) -> NetworkSpec:
    from .checkpoint import load_model

    return load_model(path).spec


def _spandrel_version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("spandrel")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _architectures() -> list[str]:
    """spandrel's architecture ids, from its package's folders: importing spandrel
    imports every architecture (and torchvision, for LaMa), seconds for a list."""
    import importlib.util

    found = importlib.util.find_spec("spandrel")
    if found is None or not found.submodule_search_locations:
        return []
    folders = Path(next(iter(found.submodule_search_locations))) / "architectures"
    return sorted((entry.name for entry in folders.iterdir()
                   if entry.is_dir() and not entry.name.startswith("_")
                   and (entry / "__init__.py").is_file()),
                  key=str.lower)


def cmd_cache(args: argparse.Namespace) -> int:
    from .cache import cache_dir, clear, entries, foreign_entries

    if args.clear:
        print(f"removed {clear()} entries from {cache_dir()}")
    else:
        print(cache_dir())
        for path, size in entries():
            print(f"  {size / 1e6:8.1f} MB  {path.relative_to(cache_dir())}")
    others = foreign_entries()
    if others:
        print(f"left alone: {len(others)} entries that {PROG} did not make, e.g. "
              f"{others[0]}", file=sys.stderr)
    return 0
