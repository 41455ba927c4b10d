"""The VapourSynth script a job runs: source → Upscale → the encoder's pixel format."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .media import source_call


@dataclass(frozen=True)
class Encoder:
    """How one ``--encoder`` choice encodes: ffmpeg codec options and the VapourSynth
    format the script hands it (``bits`` -> format name)."""

    codec: str
    formats: dict[int, str]
    quality: tuple[str, ...]  # options before the CRF value, e.g. ("-crf",)
    default_crf: int | None
    extra: tuple[str, ...] = ()


ENCODERS = {
    "x264": Encoder("libx264", {8: "YUV420P8", 10: "YUV420P10"}, ("-crf",), 16),
    "x265": Encoder("libx265", {8: "YUV420P8", 10: "YUV420P10"}, ("-crf",), 18),
    "av1": Encoder("libsvtav1", {8: "YUV420P8", 10: "YUV420P10"}, ("-crf",), 28),
    "prores": Encoder("prores_ks", {10: "YUV422P10"}, (), None, ("-profile:v", "3")),
    "ffv1": Encoder("ffv1", {8: "YUV420P8", 10: "YUV420P10"}, (), None,
                    ("-level", "3", "-g", "1")),
}
PRESET_ENCODERS = {"x264", "x265", "av1"}


@dataclass(frozen=True)
class UpscaleOptions:
    model: str | None
    tile: tuple[int, int] | None
    overlap: int
    backend: str


def render_script(source: Path, namespace: str, options: UpscaleOptions,
                  output_format: str) -> str:
    """The ``.vpy`` text. It uses the ``coreml_esrgan`` namespace when VapourSynth has it
    and the Python API otherwise (development checkouts)."""
    kwargs = {"model": options.model, "overlap": options.overlap, "backend": options.backend}
    if options.tile:
        kwargs["tile"] = list(options.tile)
    arguments = ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if v is not None)
    return f'''# Written by vs-coreml-esrgan upscale.
import vapoursynth as vs

core = vs.core
clip = {source_call(namespace, source)}
if hasattr(core, "coreml_esrgan"):
    clip = core.coreml_esrgan.Upscale(clip, {arguments})
else:
    from vs_coreml_esrgan import upscale

    clip = upscale(clip, {arguments})
clip = core.resize.Bicubic(clip, format=vs.{output_format}, dither_type="error_diffusion")
clip.set_output()
'''
