"""ncnn import: every packaged official model against the ncnn runtime itself."""

from __future__ import annotations

import struct
from pathlib import Path

import ncnn
import numpy as np
import pytest
import torch

from vs_coreml_esrgan.catalogue import KNOWN_MODELS, resolve_model
from vs_coreml_esrgan.checkpoint import load_model
from vs_coreml_esrgan.ncnn_import import parse_param, read_ncnn
from vs_coreml_esrgan.network_spec import ModelError

PHOTO = Path(__file__).parent / "data" / "photo.npy"


def _photo(size: int) -> np.ndarray:
    """A (3, size, size) float32 crop of a natural photograph, values in [0, 1]."""
    return np.load(PHOTO)[:, :size, :size].astype(np.float32) / 255


def run_ncnn(param: Path, image: np.ndarray) -> np.ndarray:
    """The reference: ncnn's own CPU runtime, float32 arithmetic throughout."""
    net = ncnn.Net()
    for option in ("use_vulkan_compute", "use_fp16_storage", "use_fp16_packed",
                   "use_fp16_arithmetic", "use_bf16_storage"):
        setattr(net.opt, option, False)
    assert net.load_param(str(param)) == 0 and net.load_model(str(param.with_suffix(".bin"))) == 0
    extractor = net.create_extractor()
    extractor.input("data", ncnn.Mat(np.ascontiguousarray(image)))
    status, out = extractor.extract("output")
    assert status == 0
    return np.array(out)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1 / mse)


@pytest.mark.parametrize("known", KNOWN_MODELS, ids=lambda m: m.name)
def test_packaged_model_matches_ncnn_runtime(known):
    path = resolve_model(known.name).path
    model = load_model(path)
    assert (model.spec.scale, model.spec.arch) == (known.scale, known.arch)
    size = 48 if known.arch == "ESRGAN" else 96
    image = _photo(size)
    with torch.inference_mode():
        ours = model.network(torch.from_numpy(image)[None]).numpy()[0]
    reference = run_ncnn(path, image)
    assert ours.shape == reference.shape == (3, size * known.scale, size * known.scale)
    assert psnr(ours, reference) >= 40  # measured: above 110 dB for every model


def _rewrite_as_fp32(param: Path, target_dir: Path) -> Path:
    """Copy an fp16 ncnn model, storing every convolution's weights as raw float32."""
    weights = read_ncnn(param)[1]
    layers = parse_param(param.read_text())
    out = bytearray()
    conv_keys = iter(k[:-len(".weight")] for k in weights
                     if k.endswith(".weight") and weights[k].ndim == 4)
    prelu_keys = iter(k for k in weights if weights[k].ndim == 1 and not k.endswith("bias"))
    for layer in layers:
        if layer.type == "Convolution":
            key = next(conv_keys)
            out += struct.pack("<I", 0) + weights[f"{key}.weight"].astype("<f4").tobytes()
            out += weights[f"{key}.bias"].astype("<f4").tobytes()
        elif layer.type == "PReLU":
            out += weights[next(prelu_keys)].astype("<f4").tobytes()
    target = target_dir / param.name
    target.write_text(param.read_text())
    target.with_suffix(".bin").write_bytes(bytes(out))
    return target


def test_float32_storage(tmp_path):
    fp16 = resolve_model("realesr-animevideov3").path
    fp32 = _rewrite_as_fp32(fp16, tmp_path)
    assert fp32.with_suffix(".bin").stat().st_size > fp16.with_suffix(".bin").stat().st_size
    image = _photo(40)
    with torch.inference_mode():
        ours = load_model(fp32).network(torch.from_numpy(image)[None]).numpy()[0]
    np.testing.assert_allclose(ours, run_ncnn(fp32, image), atol=1e-4)


@pytest.fixture
def compact_copy(tmp_path) -> Path:
    source = resolve_model("realesr-animevideov3").path
    target = tmp_path / "copy.param"
    target.write_text(source.read_text())
    target.with_suffix(".bin").write_bytes(source.with_suffix(".bin").read_bytes())
    return target


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_layer_that_disagrees_is_named(compact_copy):
    _edit(compact_copy, "Conv_4                   1 1 59 60 0=64 1=3 4=1 5=1 6=36864",
          "Conv_4                   1 1 59 60 0=64 1=3 4=1 5=1 6=36864 9=1")
    with pytest.raises(ModelError, match=r"copy\.param: layer Conv_4 \(body\.4\): expected "
                                         r"activation none, got ReLU"):
        read_ncnn(compact_copy)


def test_unknown_layer_type(compact_copy):
    _edit(compact_copy, "PReLU                    PRelu_3", "Sigmoid                  PRelu_3")
    with pytest.raises(ModelError, match="layer PRelu_3 has type Sigmoid"):
        read_ncnn(compact_copy)


def test_wrong_channel_count(compact_copy):
    _edit(compact_copy, "0=48 1=3 4=1 5=1 6=27648", "0=27 1=3 4=1 5=1 6=15552")
    with pytest.raises(ModelError, match=r"layer Conv_34 .*expected 64 -> 48 channels, "
                                         r"got 64 -> 27"):
        read_ncnn(compact_copy)


def test_truncated_and_oversized_bin(compact_copy):
    blob = compact_copy.with_suffix(".bin")
    data = blob.read_bytes()
    blob.write_bytes(data[:len(data) // 2])
    with pytest.raises(ModelError, match=r"\.bin ends early"):
        read_ncnn(compact_copy)
    blob.write_bytes(data + b"\0" * 64)
    with pytest.raises(ModelError, match=r"64 bytes left over .* does not belong"):
        read_ncnn(compact_copy)


def test_missing_bin_and_bad_magic(compact_copy):
    compact_copy.with_suffix(".bin").unlink()
    with pytest.raises(ModelError, match=r"copy\.bin' does not exist \(an ncnn model is a "
                                         r"\.param with its \.bin beside it\)"):
        read_ncnn(compact_copy)
    compact_copy.write_text("hello\n")
    compact_copy.with_suffix(".bin").write_bytes(b"")
    with pytest.raises(ModelError, match=r"not an ncnn \.param file"):
        read_ncnn(compact_copy)
