"""The two architectures against forward passes written straight from the state dict.

The references below re-derive Real-ESRGAN's computation from the published architecture
(layer roles by key name, torch.nn.functional only), independently of the modules.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import compact, random_network, rrdb


def _conv(state, name, x):
    return F.conv2d(x, state[f"{name}.weight"], state[f"{name}.bias"], padding=1)


def reference_compact(state, scale, act, x):
    last = max(int(k.split(".")[1]) for k in state if k.endswith("weight"))
    out = x
    for index in range(0, last, 2):
        out = _conv(state, f"body.{index}", out)
        if act == "prelu":
            out = F.prelu(out, state[f"body.{index + 1}.weight"])
        elif act == "relu":
            out = F.relu(out)
        else:
            out = F.leaky_relu(out, 0.1)
    out = F.pixel_shuffle(_conv(state, f"body.{last}", out), scale)
    return out + x.repeat_interleave(scale, 2).repeat_interleave(scale, 3)


def reference_rrdb(state, scale, x):
    def lrelu(t):
        return F.leaky_relu(t, 0.2)

    if scale < 4:
        x = F.pixel_unshuffle(x, 4 // scale)
    feat = _conv(state, "conv_first", x)
    trunk = feat
    blocks = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("body."))
    for b in range(blocks):
        block_in = trunk
        for r in (1, 2, 3):
            parts = [trunk]
            for c in range(1, 5):
                parts.append(lrelu(_conv(state, f"body.{b}.rdb{r}.conv{c}",
                                         torch.cat(parts, 1))))
            trunk = _conv(state, f"body.{b}.rdb{r}.conv5", torch.cat(parts, 1)) * 0.2 + trunk
        trunk = trunk * 0.2 + block_in
    feat = feat + _conv(state, "conv_body", trunk)
    for up in ("conv_up1", "conv_up2"):
        feat = lrelu(_conv(state, up, feat.repeat_interleave(2, 2).repeat_interleave(2, 3)))
    return _conv(state, "conv_last", lrelu(_conv(state, "conv_hr", feat)))


@pytest.mark.parametrize("spec", [compact(2), compact(3), compact(4, act_type="relu"),
                                  compact(4, act_type="leakyrelu")], ids=str)
def test_compact_matches_reference(spec):
    network = random_network(spec)
    x = torch.rand(2, 3, 11, 13) - 0.2
    with torch.no_grad():
        expected = reference_compact(network.state_dict(), spec.scale, spec.act_type, x)
        got = network(x)
    assert got.shape == (2, 3, 11 * spec.scale, 13 * spec.scale)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_rrdbnet_matches_reference(scale):
    spec = rrdb(scale=scale)
    network = random_network(spec)
    x = torch.rand(1, 3, 12, 16)
    with torch.no_grad():
        expected = reference_rrdb(network.state_dict(), scale, x)
        got = network(x)
    assert got.shape == (1, 3, 12 * scale, 16 * scale)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_receptive_radius_of_compact_is_exact():
    """Changing one input pixel changes outputs exactly within num_conv + 2 pixels."""
    spec = compact(scale=1, num_conv=5)
    network = random_network(spec)
    x = torch.rand(1, 3, 41, 41)
    y = x.clone()
    y[..., 20, 20] += 1.0
    with torch.no_grad():
        changed = (network(x) - network(y)).abs().amax(1)[0] > 0
    rows = changed.any(1).nonzero().flatten()
    assert (rows.min().item(), rows.max().item()) == (20 - spec.receptive_radius,
                                                     20 + spec.receptive_radius)
