"""Planning a job: every check that can run before vspipe and ffmpeg start, and the
script and ffmpeg options the run needs."""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

from .encoder_check import check_available, check_options, encoder_named, trial_encode
from .encoders import ENCODERS, Encoder, default_encoder, hdr_capable
from .hdr import read_hdr_metadata
from .media import (
    CONTAINERS,
    JobError,
    MediaInfo,
    find_ffmpeg,
    not_carried,
    probe_media,
    refused_by_muxer,
    stream_maps,
)
from .picture import able_source, fitting_format, one_reading
from .probe import SourceInfo, check_upscale, choose_source, probe_source
from .script import (
    OutputFormat,
    UpscaleOptions,
    choose_format,
    render_script,
    source_layout,
)
from .signal import HDR_TRANSFERS, output_signal
from .source import delivered_format
from .video_index import SourceError, VideoIndex, build_index


@dataclass(frozen=True)
class JobRequest:
    source: Path
    output: Path
    upscale: UpscaleOptions
    encoder: str | None = None  # None: see encoders.default_encoder
    crf: int | None = None
    quality: int | None = None  # the encoder's own scale (see encoders.Quality)
    preset: str | None = None
    bits: int | None = None  # None: the source's depth where the encoder takes it
    start: int | None = None
    end: int | None = None  # inclusive
    chunks: int = 1
    force: bool = False
    source_filter: str = "auto"
    deinterlace: bool = False
    background: bool = False  # run at background priority (see priority.py)
    # with deinterlace: also a file flagged progressive (one file: its flags may be wrong);
    # False in a batch, which deinterlaces each of its interlaced files only
    deinterlace_progressive: bool = True


@dataclass(frozen=True)
class Job:
    request: JobRequest
    ffmpeg: str
    vspipe: str
    info: SourceInfo
    media: MediaInfo
    index: VideoIndex
    script: str
    first: int
    last: int
    filters: str  # ffmpeg's -vf chain: tags (SAR, colour)
    codec_args: list[str]  # encoder, quality, track tags
    output_format: OutputFormat
    model_digest: str
    warnings: list[str] = field(default_factory=list)
    refused_codecs: frozenset[str] = frozenset()  # the output's muxer refuses them

    @property
    def encoder(self) -> Encoder:
        return ENCODERS[self.request.encoder]

    @property
    def frames(self) -> int:
        return self.last - self.first + 1

    @property
    def variable_rate(self) -> bool:
        """Whether the frames pass through the timestamp relay (see relay.py)."""
        return not self.index.constant_rate

    @property
    def video_args(self) -> list[str]:
        """ffmpeg's options for the video from the pipe (a video starting at 0). A
        variable-rate video keeps the relay's timestamps, in the source's time base."""
        if self.variable_rate:
            base = "{}/{}".format(*self.index.time_base)
            return ["-vf", self.filters, "-fps_mode", "passthrough", "-enc_time_base:v",
                    base, *self.codec_args]
        return ["-vf", self.filters, *self.codec_args]

    @property
    def is_range(self) -> bool:
        return self.first > 0 or self.last < self.info.num_frames - 1

    def video_start(self) -> Fraction:
        """Where the first output frame sits on the input's timeline (seconds from the
        file's start, as ffmpeg counts): audio that leads the video keeps its lead."""
        return self.index.seconds(self.first) - self.media.start


def plan_job(request: JobRequest) -> Job:
    """Check everything a job needs before any work starts. Raises JobError."""
    source, output = request.source, request.output
    _check_paths(source, output, request.force)
    # Absolute from here on: ffmpeg and PyAV read "clip:1.mkv" as protocol "clip" (a path
    # with a slash before its first colon is always a file).
    source, output = source.absolute(), output.absolute()
    request = replace(request, source=source, output=output)
    request = replace(request, encoder=request.encoder or default_encoder(output.suffix))
    encoder = encoder_named(request.encoder)
    quality = check_options(encoder, output.suffix, request.bits, request.crf,
                            request.quality, request.preset)
    if request.chunks < 1:
        raise JobError(f"--chunks must be at least 1, got {request.chunks}")
    if request.start is not None and request.end is not None and request.end < request.start:
        raise JobError(f"--end {request.end} is before --start {request.start}: the range "
                       "runs from --start to --end (both frame numbers, the end included)")
    if request.upscale.overlap is not None and request.upscale.overlap < 0:
        raise JobError(f"--overlap must be 0 or more, got {request.upscale.overlap}")
    upscale = _absolute_model(request.upscale)
    request = replace(request, upscale=upscale)  # what the script names (a cluster checks it)
    ffmpeg = find_ffmpeg()
    check_available(ffmpeg, encoder)
    vspipe = find_vspipe()
    media = probe_media(source)
    try:
        index = build_index(source)
    except SourceError as exc:
        raise JobError(str(exc)) from None
    namespace = able_source(choose_source(request.source_filter), index,
                             request.source_filter, source)
    info = one_reading(probe_source(namespace, source.resolve(), index), index)
    digest, scale = check_upscale(upscale, info)
    output_size = (info.width * scale, info.height * scale)
    first = request.start or 0
    last = info.num_frames - 1 if request.end is None else request.end
    if not 0 <= first <= last < info.num_frames:
        raise JobError(f"frame range {first}-{last} is outside the input's 0-"
                       f"{info.num_frames - 1}")
    warnings = []
    if info.num_frames != index.num_frames:
        counts = (f"the source filter {namespace} counts {info.num_frames} frames, PyAV "
                  f"{index.num_frames}")
        if not index.constant_rate or first > 0 or last < info.num_frames - 1:
            # frame times (variable rate) and cuts (ranges) are read from PyAV's index
            raise JobError(f"{counts}, so frame times would be wrong; use --source builtin")
        warnings.append(f"{counts}: timestamps may be off; try --source builtin")
    top_field_first = _deinterlacing(info, index, request.deinterlace, warnings,
                                     request.deinterlace_progressive)
    if _has_alpha(index.pix_fmt):
        warnings.append(f"the input has an alpha channel ({index.pix_fmt}): the output "
                        "keeps the colour only (the model upscales colour; no alpha is "
                        "written)")
    rgb = info.format_name.startswith("RGB")
    signal = output_signal(info.props, info.width, info.height, rgb)
    depth = info.bits
    if signal.hdr:
        if request.bits == 8 or max(encoder.depths) < 10:
            raise JobError(f"the input is HDR ({HDR_TRANSFERS[signal.transfer]}): 8-bit "
                           "output would band and lose it; use --bit-depth 10 with one of "
                           f"{', '.join(hdr_capable())}")
        depth = max(depth, 10)
    # the stream's own layout: the built-in source delivers a turned or odd-sized 4:2:0
    # picture as 4:4:4, and the output is 4:2:0 again where its size allows
    layout = source_layout(delivered_format(index.pix_fmt)[1])
    fmt = fitting_format(choose_format(encoder, layout, depth, request.bits), encoder,
                          request.encoder, info.width * scale, info.height * scale, warnings)
    untagged = not rgb and info.props.get("_Matrix", 2) not in (1, 4, 5, 6, 7, 8, 9, 10, 14)
    script = render_script(source.resolve(), namespace, upscale, fmt, signal,
                           set_matrix=untagged, rgb_source=rgb,
                           gray_source=info.format_name.startswith("GRAY"),
                           top_field_first=top_field_first)
    video = encoder.codec_args(fmt.layout, fmt.bits, quality, request.preset,
                               output.suffix.lower())
    if signal.hdr:
        video += _hdr_args(source, encoder, warnings)
    for key, value in media.video_stream.metadata.items():
        if key.lower() in ("language", "title", "handler_name"):
            video += ["-metadata:s:v:0", f"{key.lower()}={value}"]
    # the pipe's video has no flags: the source video's default flag, as it was
    video += ["-disposition:v:0", "default" if media.video_stream.default else "0"]
    warnings += [not_carried(stream) for stream in media.streams
                 if stream.kind == "video" and stream.index != media.video]
    refused = refused_by_muxer(ffmpeg, source, media.streams, output)
    _, stream_warnings = stream_maps(media.streams, output, refused=refused)
    filters = (f"setsar={info.sar},{signal.setparams()}"
               f"{encoder.upload_filter(fmt.layout, fmt.bits)}")
    if encoder.hardware:  # listed is not enough: the device must be there and take the size
        trial_encode(ffmpeg, encoder, ["-vf", filters, *video], output_size, fmt.pix_fmt)
    return Job(request, ffmpeg, vspipe, info, media, index, script, first, last,
               filters, video, fmt, digest, warnings + stream_warnings, refused)


def _hdr_args(source: Path, encoder: Encoder, warnings: list[str]) -> list[str]:
    """The encoder options that keep the source's mastering display and content light
    levels (the y4m pipe drops them); a warning where the encoder cannot take them."""
    metadata = read_hdr_metadata(source)
    if metadata is None:
        return []
    if not encoder.hdr_metadata:
        takers = " or ".join(e.name for e in ENCODERS.values() if e.hdr_metadata)
        warnings.append(f"encoder {encoder.name} does not carry the input's HDR10 "
                        "mastering-display and content-light metadata (the colour tags are "
                        f"kept); use --encoder {takers} to keep them")
        return []
    return metadata.encoder_args(encoder.codec)


def _check_paths(source: Path, output: Path, force: bool) -> None:
    if source.is_dir():
        raise JobError(f"input {source} is a directory; give a video file")
    if not source.is_file():
        raise JobError(f"input {source} does not exist")
    if not os.access(source, os.R_OK):
        raise JobError(f"input {source} cannot be read (permission denied)")
    if output.suffix.lower() not in CONTAINERS:
        raise JobError(f"output must end in {', '.join(CONTAINERS)}; got {output.name}")
    if output.exists() and output.resolve() == source.resolve():
        raise JobError(f"output {output} is the input file itself; choose another output "
                       "path (the input is never overwritten)")
    if output.is_dir():
        raise JobError(f"output {output} is a directory; give a file name")
    if output.exists() and not force:
        raise JobError(f"{output} exists; pass --force to replace it")
    directory = output.parent
    if not directory.is_dir():
        raise JobError(f"the output's directory {directory} does not exist; create it first")
    try:  # the only sure test: permissions, read-only mounts and quotas all show here
        with tempfile.TemporaryFile(dir=directory, prefix=".vs-coreml-esrgan-"):
            pass
    except OSError as exc:
        raise JobError(f"cannot write into the output's directory {directory} "
                       f"({exc.strerror or exc})") from None


def _absolute_model(options: UpscaleOptions) -> UpscaleOptions:
    """The script runs from a temporary directory: a model given by a relative path is
    made absolute (a catalogue name stays a name)."""
    from ..catalogue import is_model_name

    if options.model is None or is_model_name(options.model):
        return options
    path = Path(options.model).expanduser()
    if path.is_dir() and path.suffix != ".mlpackage":
        raise JobError(f"model {options.model} is a directory; give a checkpoint, an ncnn "
                       ".param or an .mlpackage")
    if not path.exists():
        raise JobError(f"model {options.model} does not exist")
    if path.is_file() and not os.access(path, os.R_OK):
        raise JobError(f"model {options.model} cannot be read (permission denied)")
    return replace(options, model=str(path.resolve()))


def _has_alpha(pix_fmt: str) -> bool:
    import av

    try:
        return any(c.is_alpha for c in av.VideoFormat(pix_fmt).components)
    except ValueError:
        return False


def _deinterlacing(info: SourceInfo, index: VideoIndex, asked: bool, warnings: list[str],
                   progressive_too: bool = True) -> bool | None:
    """None: no deinterlacing; else whether the top field comes first. Interlaced means
    the first frame says so (``_FieldBased``) or the decoder marked any frame interlaced
    (streams that start progressive). Raises JobError for interlaced input without
    ``--deinterlace``, and for ``--deinterlace`` without bwdif. ``progressive_too``:
    whether ``asked`` covers a progressive input too (with a warning)."""
    field_based = info.props.get("_FieldBased", 0)
    if field_based not in (1, 2) and index.interlaced_frames:
        field_based = 1 if index.bottom_field_first else 2
    interlaced = field_based in (1, 2)
    if not interlaced and (not asked or not progressive_too):
        return None
    have_bwdif = _has_bwdif()
    if interlaced and not asked:
        order = "top field first" if field_based == 2 else "bottom field first"
        fix = "pass --deinterlace" if have_bwdif else \
            "pip install vapoursynth-bwdif, then pass --deinterlace"
        raise JobError(f"the input is interlaced ({order}; {index.interlaced_frames} of "
                       f"{index.num_frames} frames): upscaling it as it is would smear its "
                       f"fields together. {fix} (bwdif, same frame rate), or deinterlace "
                       "it first, e.g. ffmpeg -i IN -vf bwdif=mode=send_frame -c:v ffv1 "
                       "-c:a copy deinterlaced.mkv, then upscale that")
    if not have_bwdif:
        raise JobError("--deinterlace needs VapourSynth's bwdif plugin: pip install "
                       "vapoursynth-bwdif (wheels for macOS, Linux and Windows)")
    if not interlaced:
        warnings.append("--deinterlace: the input is flagged progressive; deinterlacing it "
                        "as top field first, as asked")
    return field_based != 1


def _has_bwdif() -> bool:
    import vapoursynth as vs

    return hasattr(vs.core, "bwdif")


def find_vspipe() -> str:
    """The real vspipe binary (not the Python wrapper pip installs as a console script: a
    wrapper killed alone would leave the binary running)."""
    import shutil

    import vapoursynth

    beside = Path(vapoursynth.__file__).with_name("vspipe")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    wrapper = Path(sys.executable).parent / "vspipe"
    found = str(wrapper) if wrapper.is_file() else shutil.which("vspipe")
    if not found:
        raise JobError("vspipe not found: pip install vapoursynth (it brings vspipe)")
    return found
