"""The command line's rough edges from the third hostile round (issue 23 item 24): a
closed pipe, a doctor for a model that is not there, convert's output checked before any
work, refusals that name what they refuse, the namespace given a clip as its model, a
damaged package's metadata, torch's notes, device=0 and the modes of what convert
writes."""

from __future__ import annotations

import os
import pickle
import stat
import subprocess
import sys
import warnings

import pytest
import torch
import vapoursynth as vs
from conftest import compact, random_network

from vs_coreml_esrgan.cli import main as cli


def _command(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vs_coreml_esrgan.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize("command", [["models"], ["cache"]])
def test_a_closed_pipe_ends_the_command_quietly(tmp_path, monkeypatch, command):
    monkeypatch.setenv("VS_COREML_ESRGAN_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("VS_COREML_ESRGAN_CACHE", str(tmp_path / "cache"))
    process = _command(*command)
    process.stdout.close()  # before the command writes: as `| head -0` would
    error = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141  # 128 + SIGPIPE, as Unix tools report it
    assert error == ""


def test_doctor_for_a_missing_model_fails_before_running(tmp_path, capsys):
    assert cli(["doctor", "no-such-model"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'no-such-model'" in err and "running the checks" not in err
    assert cli(["doctor", str(tmp_path / "missing.pth")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("output", ["name-without-suffix", "existing.mlpackage"])
def test_convert_checks_its_output_before_converting(make_checkpoint, tmp_path, capsys,
                                                     monkeypatch, output):
    (tmp_path / "existing.mlpackage").mkdir()
    checkpoint = make_checkpoint(compact(scale=2))

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr("vs_coreml_esrgan.checkpoint.load_model", never)
    assert cli(["convert", str(checkpoint), "-o", str(tmp_path / output), "--tile", "32"]) == 2
    err = capsys.readouterr().err
    assert "converting" not in err
    assert ("must end in .mlpackage" in err) if "." not in output else ("already exists" in err)


class _Config:
    """A training script's options, pickled beside the weights as many checkpoints are."""


def test_a_refused_pickle_names_the_global_never_weights_only_false(tmp_path):
    from vs_coreml_esrgan.checkpoint import load_model
    from vs_coreml_esrgan.network_spec import ModelError

    state = random_network(compact(scale=2)).state_dict()
    path = tmp_path / "with options.pth"
    torch.save({"params": state, "opt": _Config()}, path)
    with pytest.raises(ModelError) as refused:
        load_model(path)
    message = str(refused.value)
    assert f"it names {__name__}._Config" in message
    assert "weights_only" not in message and "False" not in message
    raw = tmp_path / "raw pickle.pth"  # protocol 5: torch stops at the first opcode
    with open(raw, "wb") as stream:
        pickle.dump({"params": print}, stream, protocol=5)
    with pytest.raises(ModelError, match=r"it names builtins\.print") as refused:
        load_model(raw)
    assert "weights_only" not in str(refused.value)


def test_namespace_given_a_clip_as_model_says_so_in_one_line():
    import vs_coreml_esrgan  # noqa: F401 - registers the namespace

    clip = vs.core.std.BlankClip(width=16, height=16, format=vs.RGB24)
    with pytest.raises(vs.Error) as refused:
        vs.core.coreml_esrgan.Upscale(clip, model=clip)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("Upscale: model must be a model name or a file path, got "
                              "'VideoNode'")


def test_package_metadata_that_is_not_a_number_is_named_with_the_file(make_checkpoint,
                                                                      tmp_path):
    from vs_coreml_esrgan.checkpoint import load_model
    from vs_coreml_esrgan.coreml.convert import convert_model
    from vs_coreml_esrgan.coreml.package import METADATA_PREFIX, import_coremltools

    package = convert_model(load_model(make_checkpoint(compact(scale=2))),
                            tmp_path / "odd overlap.mlpackage", tile=(16, 16),
                            precision="fp32")
    ct = import_coremltools()
    model = ct.models.MLModel(str(package), skip_model_load=True)
    model.user_defined_metadata[METADATA_PREFIX + "overlap"] = "abc"
    damaged = tmp_path / "damaged.mlpackage"
    model.save(str(damaged))
    clip = vs.core.std.BlankClip(width=16, height=16, format=vs.RGBS, length=1)
    from vs_coreml_esrgan import upscale

    with pytest.raises(vs.Error, match=r"damaged\.mlpackage: its metadata says overlap 'abc', "
                                       "expected a non-negative whole number"):
        upscale(clip, str(damaged), backend="mil")


def test_meshgrid_note_does_not_reach_the_user(tmp_path):
    """torch warns once per process (TORCH_WARN_ONCE), so the CLI runs in its own."""
    from spandrel.architectures.SwinIR import SwinIR

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        network = SwinIR(img_size=16, embed_dim=12, depths=[1], num_heads=[2],
                         window_size=4, upscale=2, upsampler="pixelshuffledirect")
    path = tmp_path / "swinir.pth"
    torch.save({"params": network.state_dict()}, path)
    process = _command("inspect", str(path))
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err.decode()
    assert b"SwinIR x2" in out and b"meshgrid" not in err and err == b""


def test_device_zero_is_refused_not_auto(make_checkpoint):
    from vs_coreml_esrgan import upscale

    clip = vs.core.std.BlankClip(width=16, height=16, format=vs.RGBS, length=1)
    with pytest.raises(vs.Error, match=r"upscale: device must be cpu, cuda\[:N\] or mps, got "
                                       r"0 \(a number is not a device: write 'cuda:0'\)"):
        upscale(clip, str(make_checkpoint(compact(scale=2))), backend="torch", device=0)


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_convert_writes_with_the_users_umask(make_checkpoint, tmp_path, mask):
    checkpoint = make_checkpoint(compact(scale=2, num_conv=1))
    output = tmp_path / "shared.mlpackage"
    previous = os.umask(mask)
    try:
        assert cli(["convert", str(checkpoint), "-o", str(output), "--tile", "16",
                    "--precision", "fp32"]) == 0
    finally:
        os.umask(previous)
    paths = [output, *output.rglob("*")]
    assert any(p.is_file() for p in paths)
    for path in paths:
        expected = (0o777 if path.is_dir() else 0o666) & ~mask
        assert stat.S_IMODE(path.stat().st_mode) == expected, path
