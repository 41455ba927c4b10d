"""The networks spandrel builds against forward passes written straight from the state
dict, and the receptive radii the description claims against measured ones.

The references below re-derive Real-ESRGAN's computation from the published architecture
(layer roles by key name, torch.nn.functional only), independently of the modules.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import compact, random_network, real_esrgan_layout, rrdb, span

from vs_coreml_esrgan.architectures import receptive_radius


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
    spec = rrdb(scale=scale, num_block=2)
    network = random_network(spec)
    x = torch.rand(1, 3, 12, 16)
    with torch.no_grad():
        expected = reference_rrdb(real_esrgan_layout(network.state_dict()), scale, x)
        got = network(x)
    assert got.shape == (1, 3, 12 * scale, 16 * scale)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def _changed_rows(network, scale: int, size: int = 41) -> tuple[int, int]:
    """Input rows (first, last) whose outputs depend on one central input pixel: that
    pixel is NaN, which every operation reading it passes on, however small its weight."""
    x = torch.rand(1, 3, size, size)
    x[..., size // 2, size // 2] = float("nan")
    with torch.no_grad():
        changed = network(x).isnan().any(1)[0]
    rows = changed.any(1).nonzero().flatten()
    return rows.min().item() // scale, rows.max().item() // scale


def test_receptive_radius_of_compact_is_exact():
    """Changing one input pixel changes outputs exactly within num_conv + 2 pixels."""
    net = compact(scale=1, num_conv=5)
    radius = receptive_radius("Compact", net.kwargs)
    assert _changed_rows(random_network(net), 1) == (20 - radius, 20 + radius)


def test_receptive_radius_of_span_is_exact():
    net = span(scale=2)
    radius = receptive_radius("SPAN", net.kwargs)
    assert _changed_rows(random_network(net), 2, size=49) == (24 - radius, 24 + radius)


@pytest.mark.parametrize("scale", [4, 2])
def test_receptive_radius_of_esrgan_is_a_bound(scale):
    net = rrdb(scale=scale)
    radius = receptive_radius("ESRGAN", net.kwargs)
    size = 2 * radius + 9 + (3 if scale == 2 else 0)  # a multiple of 4 for unshuffle
    first, last = _changed_rows(random_network(net), scale, size)
    centre = size // 2
    assert centre - radius <= first and last <= centre + radius
    assert last - centre >= radius - 2 * (4 // scale)  # and a tight one


def test_groupnorm_makes_the_field_global():
    from conftest import realplksr

    net = realplksr(scale=2, layer_norm=False)
    assert receptive_radius("PLKSR", net.kwargs) is None
    assert _changed_rows(random_network(net), 2, size=33) == (0, 32)
