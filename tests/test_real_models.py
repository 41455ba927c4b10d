"""Real official weights on a real photograph: no darkening, no colour cast, sharper."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import vapoursynth as vs
from vs_helpers import clip_from_arrays, frame_array

from vs_coreml_esrgan import upscale

PHOTO = Path(__file__).parent / "data" / "photo.npy"


def _laplacian_variance(image: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of the luma: a standard sharpness measure."""
    luma = image.astype(np.float64) @ np.array([0.2126, 0.7152, 0.0722])
    lap = (luma[1:-1, :-2] + luma[1:-1, 2:] + luma[:-2, 1:-1] + luma[2:, 1:-1]
           - 4 * luma[1:-1, 1:-1])
    return float(lap.var())


@pytest.mark.parametrize("model", ["realesrgan-x4plus", "realesr-animevideov3"])
def test_real_model_keeps_colour_and_sharpens(model):
    photo = np.load(PHOTO)  # (3, 96, 96) uint8
    clip = clip_from_arrays([photo], vs.RGB24)
    out = frame_array(upscale(clip, model).get_frame(0))
    assert out.shape == (3, 384, 384) and out.dtype == np.uint8
    for channel in range(3):
        source_mean, result_mean = photo[channel].mean(), out[channel].mean()
        assert abs(result_mean - source_mean) <= 0.03 * source_mean, channel
    bicubic = frame_array(vs.core.resize.Bicubic(clip, 384, 384).get_frame(0))
    sharp_ours = _laplacian_variance(out.transpose(1, 2, 0))
    sharp_bicubic = _laplacian_variance(bicubic.transpose(1, 2, 0))
    assert sharp_ours > 1.2 * sharp_bicubic, (sharp_ours, sharp_bicubic)


def _psnr_8bit(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(float) - b.astype(float)) ** 2)
    assert mse > 0  # bf16 really ran: not the same numbers
    return float(10 * np.log10(255 ** 2 / mse))


def test_bf16_stays_within_50_db_of_fp32_animevideov3():
    """bfloat16 weights and activations (what precision 'auto' picks on CPUs with native
    bfloat16) against float32, through the filter (traced and frozen, as it runs), in the
    8-bit output a user gets."""
    crop = np.ascontiguousarray(np.load(PHOTO)[:, 24:56, 32:64])  # 32x32, edges, texture
    clip = clip_from_arrays([crop], vs.RGB24)
    fp32, bf16 = (frame_array(upscale(clip, "realesr-animevideov3", precision=p)
                              .get_frame(0)) for p in ("fp32", "bf16"))
    assert _psnr_8bit(fp32, bf16) >= 50


def test_bf16_stays_within_50_db_of_fp32_x4plus():
    """The same for RRDBNet, on the backend's own converted network run eagerly: tracing
    and freezing x4plus twice would cost most of a minute of CI on a CPU that emulates
    bfloat16 (the frozen bf16 path is the one above)."""
    import torch

    from vs_coreml_esrgan.backends.torch_backend import create_torch_backend
    from vs_coreml_esrgan.catalogue import resolve_model
    from vs_coreml_esrgan.checkpoint import load_model

    crop = np.load(PHOTO)[:, 24:48, 32:56].astype(np.float32) / 255  # 24x24
    loaded = load_model(resolve_model("realesrgan-x4plus").path)
    outputs = []
    for precision in ("fp32", "bf16"):  # the backend converts the network in place
        backend = create_torch_backend(copy.deepcopy(loaded.network), loaded.spec.scale,
                                       device="cpu", precision=precision)
        x = torch.from_numpy(crop[None]).to(backend.dtype)
        with torch.inference_mode():
            y = backend.network(x.contiguous(memory_format=torch.channels_last))
        outputs.append(np.rint(y.float().clamp(0, 1).numpy()[0] * 255))
    assert outputs[0].shape == (3, 96, 96)
    assert _psnr_8bit(*outputs) >= 50
