"""Real official weights on a real photograph: no darkening, no colour cast, sharper."""

from __future__ import annotations

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


@pytest.mark.parametrize("model", ["realesrgan-x4plus", "realesr-animevideov3"])
def test_bf16_stays_within_50_db_of_fp32(model):
    """bfloat16 weights and activations (what precision 'auto' picks on CPUs with native
    bfloat16) against float32, in the 8-bit output a user gets: PSNR of at least 50 dB,
    and not identical (bf16 really ran)."""
    crop = np.load(PHOTO)[:, 24:56, 32:64]  # 32x32: small, with edges and texture
    clip = clip_from_arrays([np.ascontiguousarray(crop)], vs.RGB24)
    fp32 = frame_array(upscale(clip, model, precision="fp32").get_frame(0)).astype(float)
    bf16 = frame_array(upscale(clip, model, precision="bf16").get_frame(0)).astype(float)
    mse = np.mean((fp32 - bf16) ** 2)
    assert mse > 0
    assert 10 * np.log10(255 ** 2 / mse) >= 50
