"""The VapourSynth script a job runs: source → Upscale → the encoder's pixel format (the
layouts and depths each encoder takes come from the table in encoders.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .encoders import Encoder
from .signal import Signal

SOURCES = ("auto", "bs", "ffms2", "lsmas", "builtin")


@dataclass(frozen=True)
class OutputFormat:
    layout: str  # "420", "422", "444" or "gray"
    bits: int

    @property
    def pix_fmt(self) -> str:
        """ffmpeg's name of this format (what the y4m pipe carries)."""
        base = "gray" if self.layout == "gray" else f"yuv{self.layout}p"
        return base if self.bits == 8 else f"{base}{self.bits}le"

    @property
    def vs_name(self) -> str:
        if self.layout == "gray":
            return f"GRAY{self.bits}"
        return f"YUV{self.layout}P{self.bits}"


def source_layout(format_name: str) -> str:
    """The chroma layout of a VapourSynth format name (RGB counts as 4:4:4)."""
    if format_name.startswith("GRAY"):
        return "gray"
    if format_name.startswith("RGB"):
        return "444"
    return next((k for k in ("420", "422", "444") if k in format_name), "420")


def choose_format(encoder: Encoder, layout: str, bits: int, requested_bits: int | None
                  ) -> OutputFormat:
    """The source's layout and depth where the encoder takes them, else the nearest it
    does: 4:2:2/4:4:4 fall back to 4:2:0 (4:2:2 for ProRes), gray to 4:2:0; the depth to
    the smallest supported one at least as deep, else the deepest."""
    if layout not in encoder.layouts:
        layout = "422" if "420" not in encoder.layouts else "420"
    if requested_bits is not None:
        return OutputFormat(layout, requested_bits)
    deeper = [d for d in encoder.depths if d >= bits]
    return OutputFormat(layout, min(deeper) if deeper else max(encoder.depths))


@dataclass(frozen=True)
class UpscaleOptions:
    model: str | None
    tile: tuple[int, int] | None
    overlap: int | None  # None: the model's default
    backend: str
    precision: str | None = None  # None: the filter's 'auto'
    prefer: str | None = None  # None: the filter's 'auto' (Core ML on a Mac)


def source_call(namespace: str, path: Path) -> str:
    """Python expression opening ``path`` in a generated script. The built-in source takes
    the index the job wrote (``vspipe -a index=FILE``), or builds its own."""
    if namespace == "builtin":
        return f"source({str(path)!r}, index=globals().get('index'))"
    function = {"bs": "bs.VideoSource", "ffms2": "ffms2.Source",
                "lsmas": "lsmas.LWLibavSource"}[namespace]
    return f"core.{function}({str(path)!r})"


def render_script(source: Path, namespace: str, options: UpscaleOptions,
                  output: OutputFormat, signal: Signal, *, set_matrix: bool,
                  rgb_source: bool, gray_source: bool = False,
                  top_field_first: bool | None = None) -> str:
    """The ``.vpy`` text. It uses the ``coreml_esrgan`` namespace when VapourSynth has it
    and the Python API otherwise (development checkouts). ``set_matrix``: the source is
    untagged, so the script tags it with the matrix ``signal`` names before upscaling.
    ``top_field_first`` (not None): deinterlace first with bwdif at the same frame rate,
    keeping the first field of each frame."""
    kwargs = {"model": options.model, "overlap": options.overlap, "backend": options.backend,
              "precision": options.precision, "prefer": options.prefer}
    if options.tile:
        kwargs["tile"] = list(options.tile)
    arguments = ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if v is not None)
    imports = "from vs_coreml_esrgan import source\n" if namespace == "builtin" else ""
    if gray_source:  # a matrix on one plane makes resize refuse the gray -> RGB step
        tag = 'clip = core.std.RemoveFrameProps(clip, "_Matrix")\n'
    elif set_matrix:
        tag = (f"clip = core.std.SetFrameProps(clip, _Matrix={signal.matrix})  # untagged: "
               f"{'SD' if signal.matrix == 6 else 'HD'} convention\n")
    else:
        tag = ""
    if top_field_first is not None:
        field = 1 if top_field_first else 0
        tag = (f"clip = core.bwdif.Bwdif(clip, field={field})  # deinterlaced, same rate, "
               f"{'top' if field else 'bottom'} field kept\n"
               "clip = core.std.SetFrameProps(clip, _FieldBased=0)\n") + tag
    if rgb_source and output.layout != "gray":
        convert = f', matrix_s="{signal.resize_matrix}", range_s="limited"'
    elif rgb_source:
        convert = ', matrix_s="709", range_s="limited"'
    else:
        convert = ""
    return f'''# Written by vs-coreml-esrgan upscale.
import vapoursynth as vs
{imports}
core = vs.core
clip = {source_call(namespace, source)}
{tag}if hasattr(core, "coreml_esrgan"):
    clip = core.coreml_esrgan.Upscale(clip, {arguments})
else:
    from vs_coreml_esrgan import upscale

    clip = upscale(clip, {arguments})
clip = core.resize.Bicubic(clip, format=vs.{output.vs_name}, dither_type="error_diffusion"{convert})
clip.set_output()
'''
