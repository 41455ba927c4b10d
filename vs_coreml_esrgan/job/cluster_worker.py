"""What a cluster's worker runs: the check made on every worker before any work, and one
segment through the same pipeline a local chunked job uses (vspipe | ffmpeg into a
video-only file), sent back as bytes.

Imports nothing of Dask at module level: the client pickles these functions by name, and
the segment's cancellation flag is looked up only inside a task.
"""

from __future__ import annotations

import hashlib
import os
import platform
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from .media import JobError, find_ffmpeg
from .plan import Job, find_vspipe
from .segments import encode_range

_SAMPLE = 1 << 16  # bytes read at the start, middle and end of a file to fingerprint it


@dataclass(frozen=True)
class FileCheck:
    """A file as the client sees it: its path (as the script names it), size, and a hash
    of three samples (enough to tell another file at the same path, cheap on a NAS)."""

    path: str
    size: int
    sample: str


def fingerprint(path: Path) -> FileCheck:
    """Raises OSError when the file cannot be read."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for offset in sorted({0, max(0, size // 2 - _SAMPLE // 2), max(0, size - _SAMPLE)}):
            handle.seek(offset)
            digest.update(handle.read(_SAMPLE))
    return FileCheck(str(path), size, digest.hexdigest())


def file_problem(expected: FileCheck) -> str | None:
    """Why this machine cannot use the file the client checked (None: it can)."""
    path = Path(expected.path)
    try:
        seen = fingerprint(path)
    except FileNotFoundError:
        return f"cannot see {path} (no such file)"
    except OSError as exc:
        return f"cannot read {path} ({exc.strerror or exc})"
    if seen.size != expected.size or seen.sample != expected.sample:
        return (f"sees another file at {path} ({seen.size} bytes; the client's has "
                f"{expected.size}, or other content)")
    return None


@dataclass(frozen=True)
class InputFacts:
    """What one worker says before the files are planned: its software, what stops it
    from running any segment, and why it cannot use each input it cannot."""

    platform: str
    version: str
    problems: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # path -> why it cannot be used


@dataclass(frozen=True)
class EngineFacts:
    """What one worker says once the jobs are planned: the backend and device its frames
    would come from, and what stops it (the model, a source filter)."""

    backend: str  # "torch", "coreml" or "mil"
    device: str  # torch: cpu, cuda or mps; otherwise the backend's name
    problems: list[str] = field(default_factory=list)
    precision: str = "auto"  # torch: what 'auto' means on this worker (bf16 on some CPUs)

    @property
    def engine(self) -> str:
        name = self.backend if self.device == self.backend else f"{self.backend} {self.device}"
        return name if self.precision == "auto" else f"{name} {self.precision}"


def inspect_inputs(files: list[FileCheck]) -> InputFacts:
    """Run on each worker (``Client.run``) before the client plans anything: can it read
    every input (the same content as the client's) and run vspipe and ffmpeg. Cheap:
    nothing heavy is imported. Never raises: problems are reported."""
    from ..version import __version__

    problems = []
    for tool in (find_vspipe, find_ffmpeg):
        try:
            tool()
        except JobError as exc:
            problems.append(str(exc))
    file_problems = {check.path: p for check in files if (p := file_problem(check))}
    return InputFacts(f"{platform.system()} {platform.machine()}", __version__, problems,
                      file_problems)


def inspect_engine(model: str, model_digest: str, backend: str, namespaces: list[str],
                   precision: str = "auto") -> EngineFacts:
    """Run on each worker once the jobs are planned: does it have the model (the same
    weights as the client's) and the source filters, and which backend, device and
    precision would compute. Never raises: problems are reported."""
    problems: list[str] = []
    backend_name, device = "?", "?"
    try:
        backend_name, device = _engine(model, backend)
        if backend_name == "torch":
            from ..backends.torch_backend import resolve_precision

            precision = resolve_precision(precision, device)
    except Exception as exc:  # reported, not raised: the client names this worker
        problems.append(f"cannot prepare backend {backend!r}: {exc}")
    problems += [p for name in namespaces if (p := _namespace_problem(name))]
    model_problem = _model_problem(model, model_digest)
    if model_problem:
        problems.append(model_problem)
    return EngineFacts(backend_name, device, problems, precision)


def _engine(model: str, backend: str) -> tuple[str, str]:
    from ..filter import _choose_backend

    chosen = _choose_backend(backend, model.endswith(".mlpackage"))
    if chosen != "torch":
        return chosen, chosen
    from ..backends.torch_backend import default_device

    return chosen, default_device()


def _namespace_problem(namespace: str) -> str | None:
    import vapoursynth as vs

    if namespace == "builtin":
        try:
            import av  # noqa: F401
        except ImportError:
            return "has no PyAV for the built-in source (pip install av)"
        return None
    if not hasattr(vs.core, namespace):
        return (f"has no source filter {namespace} (the client chose it); install it on "
                "every worker, or pass --source builtin")
    return None


def _model_problem(model: str, digest: str) -> str | None:
    from ..catalogue import is_model_name, resolve_model
    from ..checkpoint import model_sha256

    try:
        path = resolve_model(model).path if is_model_name(model) else Path(model)
        if path.is_dir():
            from ..coreml.package import package_digest

            found = package_digest(path)
        else:
            found = model_sha256(path)
    except Exception as exc:  # a missing catalogue model or file: reported, not raised
        return f"cannot read the model {model} ({exc})"
    if found != digest:
        return f"has other weights under the model {model} than the client"
    return None


def _local(job: Job) -> Job:
    """The job with this machine's ffmpeg and vspipe, and its index dated by this
    machine's view of the source (a NAS may report another modification time; the
    content was checked against the client's)."""
    source = Path(job.index.path)
    stat = source.stat()
    index = replace(job.index, path=str(source.resolve()), size=stat.st_size,
                    mtime_ns=stat.st_mtime_ns)
    return replace(job, ffmpeg=find_ffmpeg(), vspipe=find_vspipe(), index=index)


def encode_segment(job: Job, first: int, last: int, source: FileCheck, stop_event: str
                   ) -> tuple[bytes, str]:
    """The task: frames ``first``-``last`` encoded as the job's video, as (file bytes,
    this worker's name). Stops vspipe and ffmpeg when the client sets the Dask event
    ``stop_event`` (Ctrl-C). Raises JobError naming the worker."""
    from distributed import Event, get_worker

    worker = get_worker()
    label = worker_label(worker.name, worker.address)
    problem = file_problem(source)
    if problem:
        raise JobError(f"worker {label} {problem}")
    stop = Event(stop_event)
    try:
        job = _local(job)
        with tempfile.TemporaryDirectory(prefix="vs-coreml-esrgan-") as work:
            script = Path(work) / "upscale.vpy"
            script.write_text(job.script)
            job.index.save(Path(work) / "index.json")
            target = Path(work) / "segment.mkv"
            encode_range(job, script, first, last, target, None, cancelled=stop.is_set,
                         threads=_share_of_cores(worker))
            return target.read_bytes(), label
    except (JobError, OSError) as exc:
        raise JobError(f"worker {label}: frames {first}-{last}: {exc}") from None


THREADS_ENV = "VS_COREML_ESRGAN_WORKER_THREADS"


def _share_of_cores(worker) -> int:
    """The compute threads one segment may use: ``$VS_COREML_ESRGAN_WORKER_THREADS`` where
    the worker was started with it (several workers on one machine), else the machine's
    cores over the segments this worker runs at once (``dask worker --nthreads``)."""
    given = os.environ.get(THREADS_ENV, "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    return max(1, (os.cpu_count() or 1) // max(1, worker.state.nthreads))


def worker_label(name, address: str) -> str:
    """A worker as messages name it: its name and address (the address alone when the
    name is the address)."""
    return address if name is None or str(name) == address else f"{name} ({address})"
