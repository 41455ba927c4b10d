"""Every family the issue names, built with spandrel's own classes and random weights: the
description the loader gives, tiled against whole-frame output, and Core ML conversion
against the torch module on the portable executor (fp32 max error, fp16 PSNR)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import Net, compact, random_network, realplksr, rrdb, span

from vs_coreml_esrgan import tiling
from vs_coreml_esrgan.checkpoint import load_model
from vs_coreml_esrgan.coreml.convert import convert_model
from vs_coreml_esrgan.coreml.mil import MilProgram
from vs_coreml_esrgan.coreml.verify import FP16_MIN_PSNR, FP32_MAX_ABS, random_tiles
from vs_coreml_esrgan.network_spec import FALLBACK_OVERLAP, ModelError

# One of each graph: the key layout and the block or convolution count change no operation
# (those load and match spandrel in test_checkpoint.py); ESRGAN x4 and x2plus, and Compact
# x2 / x3 / x4, are converted and verified in test_coreml.py.
CONVERTIBLE = [
    rrdb(1), rrdb(1, layout="spandrel"), rrdb(2, layout="spandrel"), rrdb(4, plus=True),
    rrdb(8), compact(1), span(2), span(4), realplksr(2), realplksr(4, layer_norm=False),
]


def _torch_output(network: torch.nn.Module, tiles: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return network(torch.from_numpy(tiles.astype(np.float32))).numpy()


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("net", CONVERTIBLE, ids=str)
def test_conversion_parity_on_the_executor(make_checkpoint, tmp_path, net, precision):
    loaded = load_model(make_checkpoint(net))
    assert loaded.spec.coreml
    if precision == "fp16" and not loaded.spec.supports_half:
        with pytest.raises(ModelError, match=r"does not support half precision.*fp32"):
            convert_model(loaded, tmp_path / "m.mlpackage", tile=(16, 16), precision="fp16")
        return
    package = convert_model(loaded, tmp_path / "m.mlpackage", tile=(24, 16), precision=precision)
    program = MilProgram.load(package)
    tiles = random_tiles(program.info, seed=1)
    ours = program(tiles).astype(np.float32)
    reference = _torch_output(loaded.network, tiles)
    assert ours.shape == reference.shape == (1, 3, 16 * net.scale, 24 * net.scale)
    assert np.ptp(reference) > 0.05  # the network computes something visible
    if precision == "fp32":
        assert np.abs(ours - reference).max() <= FP32_MAX_ABS
    else:
        mse = np.mean((np.clip(ours, 0, 1) - np.clip(reference, 0, 1)) ** 2)
        assert 10 * np.log10(1 / max(mse, 1e-20)) >= FP16_MIN_PSNR


def test_architecture_that_does_not_convert_is_named(make_checkpoint, tmp_path):
    from spandrel.architectures.PLKSR import RealPLKSR

    path = tmp_path / "dysample.pth"
    torch.manual_seed(0)
    torch.save(RealPLKSR(dim=16, n_blocks=1, upscaling_factor=2, kernel_size=7,
                         dysample=True, layer_norm=True).state_dict(), path)
    loaded = load_model(path)
    assert "DySample" in loaded.spec.tags and not loaded.spec.coreml
    with pytest.raises(ModelError, match=r"dysample\.pth: PLKSR x2 .*DySample.* does not "
                                         r"convert to Core ML: torch op '.+' at to_img"):
        convert_model(loaded, tmp_path / "m.mlpackage", tile=(16, 16), precision="fp16")
    assert not (tmp_path / "m.mlpackage").exists()


@pytest.mark.parametrize("net", [compact(2, num_conv=3), span(2), rrdb(1, layout="spandrel"),
                                 realplksr(2, layer_norm=False)], ids=str)
def test_tiled_equals_whole_frame_where_the_field_allows(make_checkpoint, net):
    spec = load_model(make_checkpoint(net)).spec
    network = random_network(net)
    if spec.receptive_radius is None:  # GroupNorm: statistics of the whole input
        assert spec.default_overlap == FALLBACK_OVERLAP
        return
    overlap = spec.default_overlap
    assert overlap == spec.receptive_radius
    rng = np.random.default_rng(0)
    image = rng.random((3, 2 * overlap + 36, 2 * overlap + 44), dtype=np.float32)
    tile = (2 * overlap + 24, 2 * overlap + 20)
    plan = tiling.plan_tiles(image.shape[2], image.shape[1], tile, overlap, spec.scale)
    assert plan.num_tiles > 1
    tiled = tiling.upscale_tiled(image, plan, lambda t: _torch_output(network, t))
    whole = _torch_output(network, image[None])[0]
    np.testing.assert_allclose(tiled, whole, atol=2e-5)


def test_descriptions(make_checkpoint):
    def describe(net: Net):
        return load_model(make_checkpoint(net, name=net.arch)).spec

    esrgan, x2plus = describe(rrdb(4)), describe(rrdb(2))
    assert (esrgan.multiple_of, esrgan.minimum, esrgan.default_overlap) == (1, 2, 19)
    assert (x2plus.multiple_of, x2plus.size_requirements) == (4, "multiple of 4, at least 4")
    assert x2plus.default_overlap == FALLBACK_OVERLAP  # radius 39: too large to cover
    assert describe(compact(4, num_conv=16)).default_overlap == 18
    assert describe(span(4)).receptive_radius == 21
    groupnorm = describe(realplksr(2, layer_norm=False))
    assert (groupnorm.supports_half, groupnorm.coreml) == (False, True)


def test_inspect_and_models_show_the_description(make_checkpoint, tmp_path, monkeypatch,
                                                 capsys):
    from vs_coreml_esrgan.cli import main as cli

    monkeypatch.setenv("VS_COREML_ESRGAN_MODELS", str(tmp_path))
    monkeypatch.setenv("VS_COREML_ESRGAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("vs_coreml_esrgan.catalogue._package_dir", lambda: None)
    make_checkpoint(span(2), name="my-span")
    make_checkpoint(rrdb(2), name="my-x2plus", suffix=".safetensors")
    make_checkpoint(realplksr(4, layer_norm=False), name="my-plksr")
    assert cli(["inspect", str(tmp_path / "my-x2plus.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "architecture:     ESRGAN x2 (8nf, 1nb, unshuffle)" in out
    assert "input size:       multiple of 4, at least 4" in out
    assert "fp16:             supported" in out
    assert f"default overlap:  {FALLBACK_OVERLAP} (cross-faded; not exact)" in out
    assert "Core ML:          converts (parity tested)" in out
    assert cli(["inspect", "my-span"]) == 0  # a name from the user directory
    assert "default overlap:  21 (tiled = whole frame)" in capsys.readouterr().out
    assert cli(["models"]) == 0
    rows = {line.split()[0]: line.split()[1:6] for line in capsys.readouterr().out.splitlines()}
    assert rows["my-span"] == ["x2", "SPAN", "any", "yes", "yes"]
    assert rows["my-plksr"] == ["x4", "PLKSR", "any", "no", "yes"]
    assert rows["my-x2plus"][:2] == ["x2", "ESRGAN"]


@pytest.mark.parametrize("net", [span(2), realplksr(2, layer_norm=False), rrdb(2)], ids=str)
def test_torch_backend_runs_each_family_as_spandrel_does(make_checkpoint, net):
    """The CPU backend traces and freezes the module; its output is the module's."""
    from vs_coreml_esrgan.backends.torch_backend import create_torch_backend

    loaded = load_model(make_checkpoint(net))
    backend = create_torch_backend(loaded.network, loaded.spec.scale, device="cpu",
                                   precision="fp32")
    tiles = np.random.default_rng(2).random((2, 3, 16, 20), dtype=np.float32)
    np.testing.assert_allclose(backend(tiles), _torch_output(random_network(net), tiles),
                               atol=1e-4)


def test_convert_verify_and_inspect_a_span_package(make_checkpoint, tmp_path, capsys):
    from vs_coreml_esrgan.cli import main as cli

    checkpoint = make_checkpoint(span(2), name="span", suffix=".safetensors")
    package = tmp_path / "span.mlpackage"
    assert cli(["convert", str(checkpoint), "-o", str(package), "--tile", "24x16"]) == 0
    assert "untested" not in capsys.readouterr().err
    assert cli(["verify", str(package), "--against", str(checkpoint), "--rounds", "1"]) == 0
    assert capsys.readouterr().out.startswith("PASS: span.mlpackage (fp16, mil)")
    assert cli(["inspect", str(package)]) == 0
    out = capsys.readouterr().out
    assert "  overlap: 21" in out and "  arch: SPAN" in out
    assert "silu x" in out and "sigmoid x" in out


def test_square_requirement_reaches_the_tile_checks():
    """Uformer (spandrel: multiples of 128, square) as a description: the filter's tile
    choice and check and the converter's check all follow it."""
    from vs_coreml_esrgan.network_spec import NetworkSpec
    from vs_coreml_esrgan.tile_size import checked_tile_size as _tile_size

    spec = NetworkSpec(arch="Uformer", scale=1, multiple_of=128, square=True)
    assert spec.size_requirements == "multiple of 128, square"
    assert _tile_size(None, 300, 100, 16, spec) == (384, 384)
    with pytest.raises(ValueError, match="tile 256x128 is not square"):
        _tile_size((256, 128), 300, 100, 16, spec)
