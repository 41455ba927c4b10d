"""The ``vs-coreml-esrgan`` command: upscale, convert, verify, inspect, models, cache."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .backends import BackendError
from .backends.coreml_backend import RUNTIMES, UNIT_CHOICES
from .backends.coreml_plan import COMPUTE_UNITS
from .cli_upscale import add_upscale_parser
from .errors import UsageError
from .network_spec import ModelError

PROG = "vs-coreml-esrgan"
MIN_CONVERT_TILE = 16


def _tile(text: str) -> tuple[int, int]:
    """'512' or '640x360' (width x height)."""
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected W or WxH, got {text!r}") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected W or WxH with positive sizes, got {text!r}")
    return parts[0], parts[1]


def _resolve(model: str) -> Path:
    from .catalogue import is_model_name, resolve_model

    if is_model_name(model):
        return resolve_model(model).path
    return Path(model)


def cmd_convert(args: argparse.Namespace) -> int:
    from .checkpoint import load_model
    from .coreml.convert import convert_model
    from .memory import activation_values, check_fits

    if args.batch < 1:
        raise UsageError(f"--batch must be at least 1, got {args.batch}")
    if min(args.tile) < MIN_CONVERT_TILE:
        raise UsageError(f"--tile {args.tile[0]}x{args.tile[1]} is too small: tiles of at least "
                         f"{MIN_CONVERT_TILE} pixels (more than 2 x overlap + 1, 33 for the "
                         "default overlap of 16) leave room for the network's context")
    loaded = load_model(_resolve(args.model))
    check_fits(args.tile, args.batch, activation_values(loaded.network, loaded.spec))
    if not loaded.spec.coreml:
        print(f"{PROG}: warning: Core ML conversion of {loaded.spec.describe()} is untested; "
              "check the result with `verify`", file=sys.stderr)
    output = Path(args.output)
    print(f"converting {loaded.spec.describe()} to {output} (tile {args.tile[0]}x"
          f"{args.tile[1]}, batch {args.batch}, {args.precision}) ...", file=sys.stderr)
    convert_model(loaded, output, tile=args.tile, batch=args.batch, precision=args.precision)
    print(output)
    return 0


def _find_source(info) -> Path:
    """The catalogue model whose content hash the package recorded."""
    from .catalogue import available_models
    from .checkpoint import model_sha256

    wanted = info.metadata.get("source_sha256")
    for candidate in available_models():
        if wanted and model_sha256(candidate.path) == wanted:
            return candidate.path
    raise UsageError(f"{info.path} was converted from {info.metadata.get('source', 'a file')} "
                     "that is not among the known models; pass --against CHECKPOINT")


def cmd_verify(args: argparse.Namespace) -> int:
    from .checkpoint import load_model
    from .coreml.package import read_package
    from .coreml.verify import compare

    if args.rounds < 1:
        raise UsageError(f"--rounds must be at least 1, got {args.rounds}")
    info = read_package(args.package)
    source = Path(args.against) if args.against else _find_source(info)
    loaded = load_model(_resolve(str(source)))
    if loaded.spec.scale != info.scale:
        raise UsageError(f"{info.path.name} upscales x{info.scale} but {source.name} is "
                         f"{loaded.spec.describe()}: the scales differ, so the package was "
                         "not converted from it; pass the checkpoint it came from")
    backend = args.backend
    if backend == "auto":
        backend = "coreml" if sys.platform == "darwin" else "mil"
    if backend == "coreml":
        from .backends.coreml_backend import create_coreml_backend

        runner = create_coreml_backend(args.package, compute_units=args.compute_units,
                                       runtime=args.runtime)
        backend = f"coreml via {runner.runtime}"
    else:
        from .backends.mil_backend import create_mil_backend

        runner = create_mil_backend(args.package)
    result = compare(runner, loaded.network, info, rounds=args.rounds, seed=args.seed)
    verdict = "PASS" if result.passed else "FAIL"
    if result.non_finite:
        print(f"FAIL: {info.path.name} ({info.precision}, {backend}) computed "
              f"{result.non_finite} NaN or infinite values on {result.tiles} random tiles "
              f"where {source.name} computes finite ones: the package's weights overflow or "
              "are damaged; convert it again (fp32 if fp16 overflows)")
        return 1
    print(f"{verdict}: {info.path.name} ({info.precision}, {backend}) against {source.name} "
          f"on {result.tiles} random tiles: max abs error {result.max_abs_error:.3g}, "
          f"PSNR {result.psnr:.1f} dB (needs {result.tolerance})")
    return 0 if result.passed else 1


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


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import run_doctor

    print("running the checks (a minute or more) ...", file=sys.stderr, flush=True)
    print(run_doctor(args.model, args.size).text())
    return 0


def _inspect_model(model: str) -> int:
    from .checkpoint import load_model

    loaded = load_model(_resolve(model))
    spec = loaded.spec
    radius = ("not computed (whole-input normalisation, attention or unknown)"
              if spec.receptive_radius is None else f"{spec.receptive_radius} pixels")
    exact = spec.receptive_radius is not None and spec.default_overlap >= spec.receptive_radius
    coreml = ("converts (parity tested)" if spec.coreml else
              "untested: `convert` tries and names the failing operation; use backend "
              "'torch'")
    print(loaded.path)
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
    from .catalogue import KNOWN_MODELS, available_models, user_model_dir
    from .checkpoint import load_model

    known = {m.name for m in KNOWN_MODELS}
    found = available_models()
    print(f"{'name':26} {'scale':>5}  {'architecture':12} {'input size':22} {'fp16':4}  "
          f"{'Core ML':7} where")
    unreadable = []
    for model in found:
        try:
            spec = load_model(model.path).spec
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


def _spandrel_version() -> str:
    import spandrel

    return spandrel.__version__


def _architectures() -> list[str]:
    from spandrel import MAIN_REGISTRY

    return [support.architecture.name for support in MAIN_REGISTRY]


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Real-ESRGAN for VapourSynth: "
                                     "Core ML conversion and tools.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    convert = commands.add_parser("convert", help="checkpoint or model name -> .mlpackage")
    convert.add_argument("model", help="model name, checkpoint or ncnn .param")
    convert.add_argument("-o", "--output", required=True, help="NAME.mlpackage (not overwritten)")
    convert.add_argument("--tile", type=_tile, required=True, help="input tile, W or WxH")
    convert.add_argument("--precision", choices=("fp16", "fp32"), default="fp16")
    convert.add_argument("--batch", type=int, default=1, help="tiles per prediction")
    convert.set_defaults(func=cmd_convert)

    verify = commands.add_parser("verify", help="compare a package with its checkpoint")
    verify.add_argument("package")
    verify.add_argument("--against", help="checkpoint or model (default: found by hash)")
    verify.add_argument("--backend", choices=("auto", "coreml", "mil"), default="auto")
    verify.add_argument("--compute-units", choices=UNIT_CHOICES,
                        help="coreml backend: default auto (measured once per model)")
    verify.add_argument("--runtime", choices=RUNTIMES,
                        default="auto", help="how the coreml backend calls Core ML")
    verify.add_argument("--rounds", type=int, default=2, help="random batches to compare")
    verify.add_argument("--seed", type=int, default=0)
    verify.set_defaults(func=cmd_verify)

    inspect = commands.add_parser("inspect", help="a model's architecture, size requirements "
                                  "and Core ML support, or a package's contract, ops and devices")
    inspect.add_argument("target", metavar="MODEL_OR_PACKAGE",
                         help="model name, checkpoint, ncnn .param or .mlpackage")
    inspect.add_argument("--compute-units", choices=tuple(COMPUTE_UNITS),
                         default="ane")
    inspect.set_defaults(func=cmd_inspect)

    add_upscale_parser(commands, _tile)

    doctor = commands.add_parser("doctor", help="what this machine does with a model: "
                                 "versions, parity, compute plan, speed (markdown)")
    doctor.add_argument("model", nargs="?", default="realesr-animevideov3",
                        help="model name or file (default realesr-animevideov3)")
    doctor.add_argument("--size", type=_tile, default=(1280, 720),
                        help="frame size WxH (default 1280x720)")
    doctor.set_defaults(func=cmd_doctor)

    models = commands.add_parser("models", help="model names, their architectures and where "
                                 "they come from")
    models.set_defaults(func=cmd_models)

    cache = commands.add_parser("cache", help="show (or --clear) converted models")
    cache.add_argument("--clear", action="store_true")
    cache.set_defaults(func=cmd_cache)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # A file name that is not UTF-8 reaches stdout as surrogates: shown escaped, like
    # stderr does, instead of failing after the work is done.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except (ModelError, BackendError, OSError, ValueError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
