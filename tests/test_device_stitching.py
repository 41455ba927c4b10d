"""Cutting and stitching on a torch device, run here on CPU tensors (no GPU in CI): the
same frames as the float32 stitching of upscale_tiled followed by clamp, scale, round.
Not a measurement of any GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import vapoursynth as vs
from test_stitching import CASES, OUTPUTS, content_infer, reference

from vs_coreml_esrgan import device_stitching
from vs_coreml_esrgan.stitching import NonFiniteOutput
from vs_coreml_esrgan.tiling import plan_tiles

CPU = torch.device("cpu")


def _tensor_run(scale: int, dtype: type):
    """content_infer on tensors: what a backend's run_tensor does on its device."""
    infer = content_infer(scale, dtype)

    def run(tiles: torch.Tensor) -> torch.Tensor:
        assert tiles.device == CPU and tiles.dtype == torch.from_numpy(np.zeros(1, dtype)).dtype
        return torch.from_numpy(infer(tiles.numpy()))
    return run


@pytest.mark.parametrize(("out_dtype", "peak"), OUTPUTS)
@pytest.mark.parametrize("tile_dtype", [np.float16, np.float32])
@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}x{c[1]}-s{c[4]}-b{c[5]}" for c in CASES])
def test_device_stitching_equals_float_stitching(case, tile_dtype, out_dtype, peak):
    width, height, tile, overlap, scale, batch = case
    rng = np.random.default_rng(width * height)
    image = rng.random((3, height, width), dtype=np.float32).astype(tile_dtype)
    plan = plan_tiles(width, height, tile, overlap, scale)
    expected = reference(image, plan, content_infer(scale, tile_dtype), tile_dtype,
                         out_dtype, peak, batch)
    # planes with padded rows, as a VapourSynth frame's are
    storage = [np.zeros((height * scale, width * scale + 13), out_dtype) for _ in range(3)]
    planes = [s[:, :width * scale] for s in storage]
    torch_dtype = torch.float16 if tile_dtype == np.float16 else torch.float32
    device_stitching.upscale_on_device(image, plan, _tensor_run(scale, tile_dtype), planes,
                                       peak=peak, batch=batch, device=CPU, dtype=torch_dtype)
    np.testing.assert_array_equal(np.stack(planes), expected)
    assert all(not s[:, width * scale:].any() for s in storage)  # the row padding untouched


def test_device_stitching_refuses_non_finite_output():
    plan = plan_tiles(40, 30, (24, 24), 3, 2)

    def run(tiles):
        out = tiles.repeat_interleave(2, 2).repeat_interleave(2, 3).clone()
        out[0, 1, 5, 7] = float("inf")
        return out

    planes = [np.zeros((60, 80), np.uint8) for _ in range(3)]
    with pytest.raises(NonFiniteOutput, match="NaN or infinite values of 14400"):
        device_stitching.upscale_on_device(np.full((3, 30, 40), 0.5, np.float32), plan, run,
                                           planes, peak=255, batch=1, device=CPU,
                                           dtype=torch.float32)


def test_frame_bytes_and_fits():
    plan = plan_tiles(1280, 720, (454, 380), 16, 4)
    # float32 output twice, padded source, one batch of outputs
    assert device_stitching.frame_bytes(plan, 3, 1) == (2 * 3 * 5120 * 2880 * 4
                                                        + 3 * 1280 * 720 * 4
                                                        + 3 * 1816 * 1520 * 4)
    assert not device_stitching.fits(CPU, 1)  # the host's own writer serves the CPU


class _DeviceBackend:
    """A backend that says it stitches on its device (here the CPU), as torch on CUDA,
    computing what ``network`` (a host backend) computes."""

    name = "device"
    stitches_on_device = True
    device = CPU

    def __init__(self, network) -> None:
        self.scale = network.scale
        self.input_dtype = network.input_dtype
        self.dtype = torch.float16 if network.input_dtype == np.float16 else torch.float32
        self._network = network

    def run_tensor(self, tiles: torch.Tensor) -> torch.Tensor:
        assert tiles.device == CPU and tiles.dtype == self.dtype
        return torch.from_numpy(self._network(tiles.numpy()))

    def __call__(self, tiles):  # the host path must not run
        raise AssertionError("the host's writer ran")


@pytest.mark.parametrize("tiles", [np.float16, np.float32], ids=["f16", "f32"])
@pytest.mark.parametrize("fmt", [vs.RGB24, vs.RGB48, vs.RGBH, vs.YUV420P10],
                         ids=["RGB24", "RGB48", "RGBH", "YUV420P10"])
def test_filter_stitches_on_the_device_when_the_frame_fits(monkeypatch, fmt, tiles):
    from reference_pipeline import reference_upscale
    from test_filter import _ContentBackend
    from vs_helpers import clip_from_arrays, random_rgb

    from vs_coreml_esrgan.filter import apply_backend

    core = vs.core
    monkeypatch.setattr(device_stitching, "fits", lambda device, nbytes: True)
    source = clip_from_arrays(random_rgb(2, 30, 44, seed=2), vs.RGBS)
    clip = core.resize.Bicubic(source, format=fmt, matrix_s=None
                               if core.get_video_format(fmt).color_family == vs.RGB
                               else "709")
    plan = plan_tiles(44, 30, (24, 20), 3, 2)
    network = _ContentBackend(2, tiles)
    got = apply_backend(clip, _DeviceBackend(network), plan, batch=2)
    expected = reference_upscale(clip, network, plan, batch=2)
    for n in range(2):
        a, b = got.get_frame(n), expected.get_frame(n)
        for p in range(a.format.num_planes):
            x, y = np.asarray(a[p]).astype(np.float64), np.asarray(b[p]).astype(np.float64)
            assert np.abs(x - y).max() <= (1 if a.format.sample_type == vs.INTEGER
                                           else 2**-10), (n, p)


def test_torch_backend_runs_tensors_and_stitches_on_the_host_on_the_cpu():
    from conftest import compact, random_network

    from vs_coreml_esrgan.backends.torch_backend import create_torch_backend

    network = random_network(compact(scale=2))
    backend = create_torch_backend(network, 2, device="cpu", precision="fp32")
    assert not backend.stitches_on_device  # CUDA and MPS only
    tiles = torch.rand(2, 3, 12, 10)
    with torch.inference_mode():
        expected = network(tiles)
    torch.testing.assert_close(backend.run_tensor(tiles), expected)
