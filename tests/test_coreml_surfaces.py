"""IOSurface-backed Core ML buffers (issue 21 item 6) and the Neural Engine retried at a
smaller tile (item 5), run here against the doubles (tests/fakes: Quartz.py pads the rows
of its pixel buffers to 64 bytes, as IOSurfaces are reported to)."""

# The fixtures imported from mac_doubles are taken as parameters of the same name.
# ruff: noqa: F811

from __future__ import annotations

import sys

import numpy as np
import pytest
import vapoursynth as vs
from conftest import compact
from mac_doubles import child_env, mac, package  # noqa: F401 (fixtures)
from vs_helpers import clip_from_arrays, frame_array, random_rgb

from vs_coreml_esrgan import upscale
from vs_coreml_esrgan.backends import BackendError
from vs_coreml_esrgan.backends import coreml_backend as backend_module
from vs_coreml_esrgan.backends.coreml_child import Trial
from vs_coreml_esrgan.backends.coreml_iosurface import make_surface, surfaces_available
from vs_coreml_esrgan.backends.coreml_records import load_trials
from vs_coreml_esrgan.backends.coreml_units import check_units, choose, needs_smaller_tile
from vs_coreml_esrgan.backends.mil_backend import create_mil_backend
from vs_coreml_esrgan.cache import cache_dir
from vs_coreml_esrgan.checkpoint import load_model
from vs_coreml_esrgan.coreml.convert import convert_model
from vs_coreml_esrgan.coreml.package import read_package
from vs_coreml_esrgan.coreml.tile_rule import coreml_tile_size, smaller_tile

pytestmark = pytest.mark.skipif(sys.platform == "darwin", reason="runs the macOS code "
                                "against doubles; on a Mac test_coreml.py runs it for real")


@pytest.fixture
def odd_package(make_checkpoint, tmp_path):
    """A float16 x2 package whose tile is 20 wide: input rows of 40 bytes and output rows
    of 80 bytes, both padded in an IOSurface (to 64 and 128 bytes)."""
    loaded = load_model(make_checkpoint(compact(scale=2, num_conv=2)))
    return convert_model(loaded, tmp_path / "odd tile.mlpackage", tile=(20, 12), batch=2,
                         precision="fp16")


def _tiles(info, seed=0):
    return np.random.default_rng(seed).random(info.input_shape).astype(info.input_dtype)


def test_surfaces_are_read_and_written_by_their_strides(mac, odd_package):
    mac.surfaces()
    info = read_package(odd_package)
    compiled = backend_module.compiled_model(odd_package)
    plain = backend_module.load_backend(compiled, "cpu", info, "pyobjc")
    surfaced = backend_module.load_backend(compiled, "cpu", info, "pyobjc", "iosurface")
    assert surfaced.runtime == "pyobjc-iosurface"
    tiles = _tiles(info)
    got = surfaced(tiles)
    assert got.shape == info.output_shape and got.dtype == np.float16
    expected = create_mil_backend(odd_package)(tiles)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got, plain(tiles))
    # Core ML was handed the surfaces (N-D shapes over 2-D pixel buffers) ...
    assert mac.CoreML.surface_arrays == [info.input_shape, info.output_shape]
    source, target = mac.Quartz.created[-2:]
    assert (source.width, source.height) == (20, 2 * 3 * 12)
    assert (target.width, target.height) == (40, 2 * 3 * 24)
    # ... whose rows are padded, so a reader that ignores the stride reads other pixels.
    assert source.bytes_per_row == 64 and target.bytes_per_row == 128
    ignoring = np.frombuffer(bytes(target.memory), np.float16,
                             count=int(np.prod(info.output_shape))).reshape(info.output_shape)
    assert not np.allclose(ignoring, expected, atol=0.1)
    # Every CPU access was inside a lock, released with the lock's flags.
    assert not source.locks and not target.locks


@pytest.mark.parametrize("version", ["15.1", "14.6"])
def test_a_declined_surface_backing_is_copied(mac, odd_package, monkeypatch, version):
    """transferToMultiArray: into the surface on macOS 15, the array's own strides
    before it."""
    mac.surfaces()
    mac.version(version)
    monkeypatch.setenv("FAKE_COREML_DECLINE_BACKING", "1")
    info = read_package(odd_package)
    surfaced = backend_module.load_backend(backend_module.compiled_model(odd_package), "gpu",
                                           info, "pyobjc", "iosurface")
    tiles = _tiles(info, seed=3)
    np.testing.assert_array_equal(surfaced(tiles), create_mil_backend(odd_package)(tiles))


def test_surfaces_only_for_float16_programs_on_macos_12(mac, monkeypatch):
    assert not surfaces_available(np.float16, np.float16)  # no Quartz bindings
    mac.surfaces()
    assert surfaces_available(np.float16, np.float16)
    assert not surfaces_available(np.float32, np.float32)
    mac.version("11.7")
    assert not surfaces_available(np.float16, np.float16)


def test_refused_surfaces_are_backend_errors(mac, monkeypatch):
    mac.surfaces()
    with pytest.raises(BackendError, match="could not create a 0x3"):
        make_surface((3, 0))
    monkeypatch.setattr(mac.CoreML.MLMultiArray, "initWithPixelBuffer_shape_",
                        lambda self, buffer, shape: None)
    with pytest.raises(BackendError, match="could not wrap a 4x6 pixel buffer"):
        make_surface((2, 3, 4))


def test_the_trial_takes_surfaces_only_when_they_are_faster(mac, odd_package, monkeypatch):
    mac.surfaces()
    info = read_package(odd_package)
    compiled = backend_module.compiled_model(odd_package)
    reference = backend_module.reference_file(odd_package, compiled)[0]
    said = []
    # IOSurface-fed predictions 300 ms slower (more than this machine's noise).
    child_env(monkeypatch, FAKE_COREML_SURFACE_DELAY_MS="0=300")
    slower = check_units(compiled, info, "pyobjc", "cpu", notify=said.append,
                         reference=reference)
    assert slower.usable and slower.buffers == "plain"
    assert slower.variants.startswith("plain ") and "; IOSurface " in slower.variants
    # Plain predictions 300 ms slower, IOSurface-fed ones not: the surfaces are used.
    child_env(monkeypatch, FAKE_COREML_DELAY_MS="1=300", FAKE_COREML_SURFACE_DELAY_MS="1=-300")
    faster = check_units(compiled, info, "pyobjc", "gpu", notify=said.append,
                         reference=reference)
    assert faster.usable and faster.buffers == "iosurface"
    assert f"; IOSurface {faster.ms_per_tile:.1f} ms" in faster.variants
    assert faster.psnr == float("inf")  # the doubles compute what the executor computes
    backend = backend_module.create_coreml_backend(odd_package, compute_units="gpu",
                                                   runtime="pyobjc", notify=said.append)
    assert backend.runtime == "pyobjc-iosurface"
    tiles = _tiles(info, seed=1)
    np.testing.assert_array_equal(backend(tiles), create_mil_backend(odd_package)(tiles))


def test_surfaces_that_fail_leave_the_plain_buffers(mac, odd_package, monkeypatch):
    mac.surfaces()
    info = read_package(odd_package)
    compiled = backend_module.compiled_model(odd_package)
    monkeypatch.setattr(mac.Quartz, "CVPixelBufferCreate", lambda *_: (-6661, None))
    from vs_coreml_esrgan.backends.coreml_trial import faster_buffers

    plain = backend_module.load_backend(compiled, "gpu", info, "pyobjc")
    request = {"warmup": 0, "runs": 1}
    answer = faster_buffers(plain, request, {"ms_per_tile": 5.0})
    assert answer["buffers"] == "plain" and answer["ms_per_tile"] == 5.0
    assert "IOSurface failed: BackendError: CoreVideo could not create" in answer["variants"]


def test_choose_retries_a_failed_neural_engine_once():
    compile_failed = Trial("ane", error="Core ML could not load: ANECCompile() FAILED",
                           compiler_errors=("ANECCompile() FAILED",))
    timed_out = Trial("ane", error="no result within 600 s")
    assert needs_smaller_tile(compile_failed) and needs_smaller_tile(timed_out)
    assert not needs_smaller_tile(Trial("ane", error="skipped: no Neural Engine"))
    assert not needs_smaller_tile(Trial("gpu", error="no result within 600 s"))
    retried = Trial("ane", ms_per_tile=8.0, psnr=60.0, tile=(224, 224),
                    first_error=compile_failed.error)
    assert not needs_smaller_tile(retried)  # once: a retry is never retried
    asked = []

    def retry(failed):
        asked.append(failed)
        return retried

    times = {"gpu": Trial("gpu", ms_per_tile=20.0), "all": Trial("all", ms_per_tile=15.0)}
    choice = choose(lambda units: times.get(units, compile_failed), ("gpu", "ane", "all"),
                    retry=retry)
    assert asked == [compile_failed] and choice.units == "ane"
    assert "ane chosen, 8.0 ms/tile (at tile 224x224, time scaled" in choice.message()
    # A saved retry is used as it is.
    again = choose(lambda units: times[units], ("gpu", "ane", "all"),
                   known={"ane": retried}, retry=retry)
    assert again.units == "ane" and len(asked) == 1


def test_a_neural_engine_that_rejects_the_tile_runs_at_a_smaller_one(
        mac, make_checkpoint, monkeypatch, capfd):
    """The Neural Engine compiler rejects the automatic tile (coremltools #2247,
    executorch #8439, here FAKE_COREML_ANE_MAX_PIXELS): compute units 'ane' are tried once
    at a smaller tile, which compiles; the frames are the executor's."""
    checkpoint = make_checkpoint(compact(scale=2, num_conv=2))
    loaded = load_model(checkpoint)
    width, height, overlap = 150, 90, 4
    tile = coreml_tile_size(width, height, overlap, loaded.network, loaded.spec)
    small = smaller_tile(tile, overlap, loaded.spec)
    assert small is not None and small[0] % 16 == 0 and small[0] * small[1] < tile[0] * tile[1]
    child_env(monkeypatch, FAKE_COREML_ANE_MAX_PIXELS=str(small[0] * small[1]))
    clip = clip_from_arrays(random_rgb(1, height, width, seed=4), vs.RGBS)
    got = frame_array(upscale(clip, checkpoint, overlap=overlap, backend="coreml",
                              compute_units="ane").get_frame(0))
    said = capfd.readouterr().err
    assert (f"the Neural Engine failed at tile {tile[0]}x{tile[1]} (BackendError: Core ML "
            "could not load" in said and f"trying it once at tile {small[0]}x{small[1]}" in said)
    # The executor on the same program at the smaller tile (a tile larger than this frame
    # pads its edges, so the package's own tile gives other edge pixels).
    executor = frame_array(upscale(clip, checkpoint, overlap=overlap, backend="mil",
                                   tile=small).get_frame(0))
    np.testing.assert_allclose(got, executor, atol=1e-3)
    # Saved with the package's own record: the next filter runs the smaller tile at once.
    saved = [t for record in (cache_dir() / "choices").glob("*-pyobjc-*.json")
             for t in [load_trials(record).get("ane")] if t is not None]
    (trial,) = saved
    assert trial.tile == small and trial.usable and "ANECCompile() FAILED" in trial.first_error
    again = frame_array(upscale(clip, checkpoint, overlap=overlap, backend="coreml",
                                compute_units="ane").get_frame(0))
    assert "trying it once" not in capfd.readouterr().err
    np.testing.assert_array_equal(again, got)



def test_locks_and_strides_that_go_wrong_are_backend_errors(mac, monkeypatch):
    from vs_coreml_esrgan.backends.coreml_iosurface import read_surface

    mac.surfaces()
    surface = make_surface((2, 3, 4))
    out = np.empty((2, 3, 4), np.float16)
    monkeypatch.setattr(mac.Quartz, "CVPixelBufferGetBytesPerRow", lambda buffer: 6)
    with pytest.raises(BackendError, match="a 4-wide float16 pixel buffer reports 6 bytes"):
        read_surface(surface, out)
    assert not surface.buffer.locks  # unlocked on the way out
    monkeypatch.setattr(mac.Quartz, "CVPixelBufferLockBaseAddress", lambda *_: -6661)
    with pytest.raises(BackendError, match="could not lock a pixel buffer"):
        read_surface(surface, out)
    monkeypatch.setitem(sys.modules, "Quartz", None)  # PyObjC without its Quartz bindings
    assert not surfaces_available(np.float16, np.float16)


def test_a_retry_needs_a_smaller_tile_and_its_package(mac, package):
    from vs_coreml_esrgan.backends.coreml_units import Retile

    made = package()
    info = read_package(made)
    said = []
    failed = Trial("ane", error="no result within 600 s")
    none_smaller = Retile(smaller=lambda tile: None, package=lambda tile: 1 / 0)
    assert backend_module.smaller_tile_retry(none_smaller, info, "pyobjc", said.append)(
        failed) is None

    def refused(tile):
        raise BackendError("conversion refused")

    unmade = Retile(smaller=lambda tile: (8, 8), package=refused)
    assert backend_module.smaller_tile_retry(unmade, info, "pyobjc", said.append)(
        failed) is None
    assert said[-1] == "Core ML: no package at tile 8x8: conversion refused"
    # A saved verdict at a smaller tile, but nothing to convert it with (a package given).
    from vs_coreml_esrgan.backends.coreml_records import record_path, save_trials

    compiled = backend_module.compiled_model(made)
    save_trials(record_path(compiled, "pyobjc"),
                {"ane": Trial("ane", ms_per_tile=1.0, tile=(8, 8), measured_at=0.0)})
    with pytest.raises(BackendError, match="ran 'ane' only at tile 8x8"):
        backend_module.load_chosen(compiled, info, "ane", "pyobjc", None)


def test_the_trial_child_reports_both_buffers(mac, odd_package, monkeypatch, capsys):
    """What each child runs (here in process): both buffers timed and gated, the faster
    passing one answered with its PSNR."""
    import json

    from vs_coreml_esrgan.backends import coreml_trial
    from vs_coreml_esrgan.backends.coreml_child import trial_request

    mac.surfaces()
    monkeypatch.setenv("FAKE_COREML_DELAY_MS", "0=300")
    monkeypatch.setenv("FAKE_COREML_SURFACE_DELAY_MS", "0=-300")
    info = read_package(odd_package)
    compiled = backend_module.compiled_model(odd_package)
    reference = backend_module.reference_file(odd_package, compiled)[0]
    request = {**trial_request(compiled, info, "pyobjc", "cpu", reference),
               "warmup": 0, "runs": 1}
    assert coreml_trial.main([json.dumps(request)]) == 0
    result = Trial.from_dict(json.loads(capsys.readouterr().out))
    assert result.usable and result.buffers == "iosurface" and result.psnr == float("inf")
    assert result.variants == (f"plain {float(result.variants.split()[1]):.1f} ms; "
                               f"IOSurface {result.ms_per_tile:.1f} ms")
