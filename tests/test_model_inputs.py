"""Models that went wrong in the third hostile round (issue 23, items 1-7): networks that
shared a trace, activations and channel counts that were guessed, growth channels that were
refused, paths taken for names, decompression bombs and files that are not regular."""

from __future__ import annotations

import os

import pytest
import torch
from conftest import compact, random_network

from vs_coreml_esrgan.architectures import describe, with_bicubic_resize
from vs_coreml_esrgan.backends.torchscript import frozen_module
from vs_coreml_esrgan.catalogue import is_model_name
from vs_coreml_esrgan.checkpoint import load_model
from vs_coreml_esrgan.network_spec import ModelError


def _compact_spec_and_network(seed: int):
    from spandrel import ModelLoader

    network = random_network(compact(scale=4), seed=seed)
    descriptor = ModelLoader().load_from_state_dict(network.state_dict())
    return describe(descriptor), descriptor.model.eval()


def test_networks_differing_only_in_a_resize_factor_get_their_own_trace():
    """realesr-animevideov3-x2 and -x3: one body, resized to x2 or x3 (an attribute repr
    does not show). Each must compute its own result in one process, in either order."""
    spec, body = _compact_spec_and_network(seed=2301)
    x = torch.rand(1, 3, 16, 24).contiguous(memory_format=torch.channels_last)
    for scale in (2, 3, 2):
        _, network = with_bicubic_resize(spec, body, scale)
        with torch.inference_mode():
            expected = network(x)
            got = frozen_module(network, x)(x)
        assert got.shape == (1, 3, 16 * scale, 24 * scale)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("text", ["model.ckpt", "X.PTH", "Model.SafeTensors", "m.PARAM",
                                  "pack.MLPACKAGE", "w.Bin"])
def test_file_names_with_any_suffix_case_are_paths(text):
    assert not is_model_name(text)


def test_relative_ckpt_and_upper_case_suffix_load(make_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("model.ckpt", "X.PTH"):
        os.replace(make_checkpoint(compact(scale=2), name="source"), tmp_path / name)
        from vs_coreml_esrgan.filter import _model_path

        assert load_model(_model_path(name)).spec.scale == 2


def test_existing_file_with_another_suffix_is_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.weights").write_bytes(b"")
    assert not is_model_name("model.weights")
    assert is_model_name("realesr-animevideov3")


def test_a_device_is_named_as_a_device():
    with pytest.raises(ModelError, match=r"/dev/zero is a character device, not a model file"):
        load_model("/dev/zero")


@pytest.mark.parametrize("name", ["model pipe.pth", "model pipe.param"])
def test_a_fifo_is_named_as_a_fifo(tmp_path, name):
    fifo = tmp_path / name
    os.mkfifo(fifo)
    with pytest.raises(ModelError, match=r"is a FIFO \(named pipe\), not a model file"):
        load_model(fifo)
