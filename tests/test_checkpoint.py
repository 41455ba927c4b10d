"""Checkpoint reading and architecture detection."""

from __future__ import annotations

import pickle

import pytest
import torch
from conftest import compact, random_network, rrdb

from vs_coreml_esrgan.checkpoint import load_model, read_state_dict
from vs_coreml_esrgan.network_spec import ModelError, detect_spec


@pytest.mark.parametrize("spec", [
    rrdb(scale=4), rrdb(scale=2), rrdb(scale=1), rrdb(scale=4, num_block=3, num_feat=12,
                                                      num_grow_ch=6),
    compact(scale=2), compact(scale=3), compact(scale=4, num_conv=6, num_feat=12),
], ids=lambda s: s.describe())
def test_detects_architecture_and_sizes(make_checkpoint, spec):
    loaded = load_model(make_checkpoint(spec))
    assert loaded.spec == spec
    assert loaded.spec.multiple_of == (4 // spec.scale if spec.arch == "rrdbnet" else 1)


@pytest.mark.parametrize(("wrapper", "suffix"), [
    ("params_ema", ".pth"), ("params", ".pth"), (None, ".pth"), (None, ".safetensors")])
def test_reads_every_container(make_checkpoint, wrapper, suffix):
    spec = compact(scale=2)
    path = make_checkpoint(spec, wrapper=wrapper, suffix=suffix)
    loaded = load_model(path)
    x = torch.rand(1, 3, 9, 7)
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


def _old_esrgan_names(num_block: int) -> dict[str, str]:
    """The original ESRGAN layout written out by hand: current name -> old name."""
    names = {"conv_first": "model.0", "conv_body": f"model.1.sub.{num_block}",
             "conv_up1": "model.3", "conv_up2": "model.6", "conv_hr": "model.8",
             "conv_last": "model.10"}
    for b in range(num_block):
        for r in (1, 2, 3):
            for c in range(1, 6):
                names[f"body.{b}.rdb{r}.conv{c}"] = f"model.1.sub.{b}.RDB{r}.conv{c}.0"
    return names


@pytest.mark.parametrize("layout", ["model.N", "RRDB_trunk"])
def test_old_esrgan_layouts(tmp_path, layout):
    spec = rrdb(scale=4, num_block=2)
    network = random_network(spec, seed=3)
    if layout == "model.N":
        names = _old_esrgan_names(2)
    else:
        names = {"conv_first": "conv_first", "conv_body": "trunk_conv", "conv_up1": "upconv1",
                 "conv_up2": "upconv2", "conv_hr": "HRconv", "conv_last": "conv_last"}
        names |= {f"body.{b}.rdb{r}.conv{c}": f"RRDB_trunk.{b}.RDB{r}.conv{c}"
                  for b in range(2) for r in (1, 2, 3) for c in range(1, 6)}
    state = {}
    for key, value in network.state_dict().items():
        module, kind = key.rsplit(".", 1)
        state[f"{names[module]}.{kind}"] = value
    assert "conv_first.weight" not in state or layout == "RRDB_trunk"
    path = tmp_path / "old.pth"
    torch.save(state, path)
    loaded = load_model(path)
    assert loaded.spec == spec
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded.network(x), network(x))


@pytest.mark.parametrize("act", ["relu", "leakyrelu"])
def test_compact_without_prelu_needs_act_type_for_relu(make_checkpoint, act):
    spec = compact(scale=2, act_type=act)
    path = make_checkpoint(spec)
    assert load_model(path).spec.act_type == "leakyrelu"  # the documented assumption
    loaded = load_model(path, act_type=act)
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
    with pytest.raises(ModelError, match=r"other\.pth: not a Real-ESRGAN .* found "
                                         r"decoder\.bias, encoder\.weight"):
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
    with pytest.raises(ModelError, match=r"bent\.pth: tensors do not fit SRVGGNetCompact"):
        load_model(path)


def test_detection_needs_only_shapes():
    shapes = {k: tuple(v.shape) for k, v in random_network(rrdb(scale=2)).state_dict().items()}
    assert detect_spec(shapes) == rrdb(scale=2)


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
