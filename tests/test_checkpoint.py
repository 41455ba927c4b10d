"""Checkpoint reading and architecture detection (through spandrel)."""

from __future__ import annotations

import pickle

import pytest
import torch
from conftest import compact, random_network, real_esrgan_layout, realplksr, rrdb, span

from vs_coreml_esrgan.checkpoint import load_model, read_state_dict
from vs_coreml_esrgan.network_spec import ModelError

# The shapes the issue lists: ESRGAN 1x (plain, unshuffle), 2x (plain, x2plus), 4x (old and
# new layout, 6 and 23 blocks' layout at small size, plus), 8x; Compact 1x/2x/4x (16 and 32
# convolutions' layout at small size); SPAN 2x/4x; RealPLKSR (GroupNorm, LayerNorm).
NETS = [
    rrdb(1), rrdb(1, layout="spandrel"), rrdb(2), rrdb(2, layout="spandrel"), rrdb(4),
    rrdb(4, layout="spandrel", num_block=6), rrdb(4, num_block=23, num_feat=4),
    rrdb(4, plus=True), rrdb(8), compact(1), compact(2), compact(4, num_conv=16),
    compact(4, num_conv=32, num_feat=12), span(2), span(4), realplksr(2),
    realplksr(4, layer_norm=False),
]


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("net", NETS, ids=str)
def test_detects_architecture_and_matches_spandrel(make_checkpoint, net, suffix):
    loaded = load_model(make_checkpoint(net, suffix=suffix))
    spec = loaded.spec
    assert (spec.arch, spec.scale, spec.num_in_ch, spec.num_out_ch) == (net.arch, net.scale,
                                                                        3, 3)
    assert spec.multiple_of == net.multiple_of
    assert spec.supports_half == (net.arch != "PLKSR" or net.kwargs["layer_norm"])
    x = torch.rand(1, 3, 12, 16)
    with torch.no_grad():
        assert torch.equal(loaded.network(x), random_network(net)(x))


@pytest.mark.parametrize(("wrapper", "suffix"), [
    ("params_ema", ".pth"), ("params", ".pth"), (None, ".pth"), (None, ".safetensors")])
def test_reads_every_container(make_checkpoint, wrapper, suffix):
    spec = rrdb(scale=2)
    path = make_checkpoint(spec, wrapper=wrapper, suffix=suffix)
    loaded = load_model(path)
    x = torch.rand(1, 3, 8, 12)
    with torch.no_grad():
        assert torch.equal(loaded.network(x), random_network(spec)(x))


def test_params_ema_preferred_over_params(tmp_path):
    spec = compact(scale=2)
    ema, plain = random_network(spec, seed=1), random_network(spec, seed=2)
    path = tmp_path / "both.pth"
    torch.save({"params": plain.state_dict(), "params_ema": ema.state_dict()}, path)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(load_model(path).network(x), ema(x))


def test_intermediate_esrgan_layout(tmp_path):
    """BSRGAN / RealSR files: RRDB_trunk, trunk_conv, upconv1, HRconv."""
    net = rrdb(scale=4)
    network = random_network(net, seed=3)
    names = {"conv_body": "trunk_conv", "conv_up1": "upconv1", "conv_up2": "upconv2",
             "conv_hr": "HRconv"}
    state = {}
    for key, value in real_esrgan_layout(network.state_dict()).items():
        module, _, rest = key.partition(".")
        if module == "body":
            key = "RRDB_trunk." + rest.replace("rdb", "RDB")
        state[f"{names[module]}.{rest}" if module in names else key] = value
    path = tmp_path / "old.pth"
    torch.save(state, path)
    loaded = load_model(path)
    assert (loaded.spec.arch, loaded.spec.scale) == ("ESRGAN", 4)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded.network(x), network(x))


@pytest.mark.parametrize("act", ["relu", "leakyrelu"])
def test_compact_without_prelu_takes_act_type(make_checkpoint, act):
    spec = compact(scale=2, act_type=act)
    path = make_checkpoint(spec)
    loaded = load_model(path, act_type=act)
    assert act in loaded.spec.tags
    x = torch.rand(1, 3, 8, 8) - 0.5
    with torch.no_grad():
        assert torch.equal(loaded.network(x), random_network(spec)(x))


def test_act_type_that_contradicts_weights(make_checkpoint):
    with pytest.raises(ModelError, match="does not fit the weights"):
        load_model(make_checkpoint(compact()), act_type="relu")


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "nope.pth")


def test_garbage_file(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(ModelError, match=r"junk\.pth: not a readable PyTorch checkpoint"):
        load_model(path)


def test_truncated_file(make_checkpoint):
    path = make_checkpoint(compact())
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ModelError, match="not a readable PyTorch checkpoint"):
        load_model(path)


def test_damaged_safetensors(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    with pytest.raises(ModelError, match=r"bad\.safetensors: not a readable safetensors"):
        load_model(path)


class _Payload:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_refuses_pickled_code(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as stream:
        pickle.dump({"params": _Payload()}, stream)
    with pytest.raises(ModelError, match="refused to load"):
        load_model(path)
    assert "pickled code ran" not in capsys.readouterr().out


def test_unknown_architecture(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(4, 3, 3, 3), "decoder.bias": torch.zeros(3)},
               path)
    with pytest.raises(ModelError, match=r"other\.pth: not an architecture spandrel knows .* "
                                         r"found keys decoder\.bias, encoder\.weight"):
        load_model(path)


def test_no_tensors(tmp_path):
    path = tmp_path / "meta.pth"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(ModelError, match="expected tensors, found epoch: int"):
        read_state_dict(path)


def test_tensor_that_does_not_fit(make_checkpoint, tmp_path):
    state = random_network(compact(scale=2)).state_dict()
    state["body.2.bias"] = torch.zeros(5)
    path = tmp_path / "bent.pth"
    torch.save(state, path)
    with pytest.raises(ModelError, match=r"bent\.pth: tensors do not fit RealESRGAN Compact"):
        load_model(path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_non_finite_weights_are_refused_naming_file_and_tensor(tmp_path, bad, suffix):
    state = random_network(compact(scale=2)).state_dict()
    state["body.2.weight"][0, 1, 2, 0] = bad
    path = tmp_path / f"diverged{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, path)
    else:
        torch.save({"params": state}, path)
    with pytest.raises(ModelError, match=rf"diverged\{suffix}: the weights are not finite: "
                                         r"body\.2\.weight \((1 NaN, 0|0 NaN, 1) infinite"):
        load_model(path)


def test_a_directory_is_called_a_directory(tmp_path):
    (tmp_path / "weights.pth").mkdir()
    for reader in (load_model, read_state_dict):
        with pytest.raises(ModelError, match=r"weights\.pth is a directory, not a model file: "
                                             r"expected a checkpoint \(\.pth"):
            reader(tmp_path / "weights.pth")


def test_text_and_ncnn_bin_say_what_was_expected(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("hello, not weights\n")
    with pytest.raises(ModelError, match=r"notes\.pth: not a readable PyTorch checkpoint: it "
                                         r"starts with text 'hello, not weigh'.*expected a "
                                         r"checkpoint \(\.pth, \.pt, \.safetensors\)"):
        load_model(text)
    weights = tmp_path / "net.bin"
    weights.write_bytes(bytes(range(64)))
    with pytest.raises(ModelError, match=r"net\.bin: .*weights half of an ncnn model: pass "
                                         r"the \.param file"):
        load_model(weights)
    (tmp_path / "net.param").write_text("7767517\n")
    with pytest.raises(ModelError, match=r"pass net\.param instead"):
        load_model(weights)


def test_esrgan_with_missing_tensor(make_checkpoint, tmp_path):
    state = real_esrgan_layout(random_network(rrdb(scale=4)).state_dict())
    del state["conv_hr.weight"]
    path = tmp_path / "cut.pth"
    torch.save(state, path)
    with pytest.raises(ModelError, match=r"cut\.pth: .*ESRGAN"):
        load_model(path)
