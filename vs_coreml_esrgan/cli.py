"""The ``vs-coreml-esrgan`` command: upscale, convert, verify, inspect, models, cache
(the catalogue commands live in cli_catalogue, upscale in cli_upscale)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path

from .backends import BackendError
from .backends.coreml_backend import RUNTIMES, UNIT_CHOICES
from .backends.coreml_plan import COMPUTE_UNITS
from .cli_catalogue import cmd_cache, cmd_inspect, cmd_models
from .cli_upscale import add_upscale_parser
from .errors import UsageError
from .network_spec import ModelError, NetworkSpec

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
    from .coreml.convert import check_output, convert_model
    from .memory import activation_values, check_fits

    if args.batch < 1:
        raise UsageError(f"--batch must be at least 1, got {args.batch}")
    if min(args.tile) < MIN_CONVERT_TILE:
        raise UsageError(f"--tile {args.tile[0]}x{args.tile[1]} is too small: tiles of "
                         f"at least {MIN_CONVERT_TILE} pixels a side")
    output = check_output(args.output)
    loaded = load_model(_resolve(args.model))
    check_fits(args.tile, args.batch, activation_values(loaded.network, loaded.spec))
    if not loaded.spec.coreml:
        print(f"{PROG}: warning: Core ML conversion of {loaded.spec.describe()} is untested; "
              "check the result with `verify`", file=sys.stderr)
    _warn_small_tile(args.tile, loaded.spec)
    print(f"converting {loaded.spec.describe()} to {output} (tile {args.tile[0]}x"
          f"{args.tile[1]}, batch {args.batch}, {args.precision}) ...", file=sys.stderr)
    convert_model(loaded, output, tile=args.tile, batch=args.batch, precision=args.precision)
    print(output)
    return 0


def _warn_small_tile(tile: tuple[int, int], spec: NetworkSpec) -> None:
    """The filter's rule (tile_size.check_tile_overlap) told before converting: a side
    shorter than 2 x overlap + 1 serves only frames it covers, unless overlap= is lowered."""
    needed = 2 * spec.default_overlap + 1
    if min(tile) < needed:
        print(f"{PROG}: warning: tile {tile[0]}x{tile[1]} is smaller than 2 x overlap + 1 = "
              f"{needed} ({spec.describe()}'s default overlap is {spec.default_overlap}): "
              f"the package upscales frames of at most {tile[0]}x{tile[1]} as one tile, "
              f"larger ones only with overlap={(min(tile) - 1) // 2} or less; use --tile "
              f"{max(needed, tile[0])}x{max(needed, tile[1])} or larger for any frame size",
              file=sys.stderr)


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


def cmd_doctor(args: argparse.Namespace) -> int:
    from .checkpoint import check_model_file
    from .doctor import run_doctor

    path = _resolve(args.model)  # an unknown name or a missing file: one line, exit 2
    if not str(path).lower().endswith(".mlpackage"):
        check_model_file(path)
    print("running the checks (a minute or more) ...", file=sys.stderr, flush=True)
    report = run_doctor(args.model, args.size)
    print(report.text())
    return 0 if report.model_loaded else 1  # the report is printed either way


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


# The exit status of a command whose output pipe closed: 128 + SIGPIPE, as a Unix tool
# killed by the signal reports.
BROKEN_PIPE_STATUS = 141


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # A file name that is not UTF-8 reaches stdout as surrogates: shown escaped, like
    # stderr does, instead of failing after the work is done.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        status = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
        return status
    except BrokenPipeError as exc:
        if not _stdout_closed():  # a pipe of the command's own (ffmpeg, a worker)
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return 2
        _silence_stdout()  # `models | head -1`: the reader has what it wanted
        return BROKEN_PIPE_STATUS
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except (ModelError, BackendError, OSError, ValueError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2


def _stdout_closed() -> bool:
    """Whether standard output is a pipe whose reader has gone (poll reports an error
    condition on the write end of such a pipe)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll, or stdout is not a file
        return False


def _silence_stdout() -> None:
    """Point standard output at the null device, so the interpreter's final flush of what
    is still buffered does not fail again on the closed pipe."""
    import os

    with contextlib.suppress(OSError, ValueError, AttributeError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)


if __name__ == "__main__":
    raise SystemExit(main())
