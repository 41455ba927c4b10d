"""Colour handling: each YUV / GRAY frame converted with its own properties, bad ones
reported or replaced by the documented fallback."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import vapoursynth as vs
from conftest import compact, random_network
from vs_helpers import clip_from_arrays, frame_array, random_rgb

from vs_coreml_esrgan import upscale

core = vs.core
SPEC = compact(scale=2, num_conv=3)
PROPS = ["_Matrix", "_Range", "_ColorRange"]


@pytest.fixture
def model(make_checkpoint):
    return make_checkpoint(SPEC)


def _yuv(seed: int, matrix: str, rng: str, **props) -> vs.VideoNode:
    """A one-frame YUV420P8 clip made with ``matrix`` / ``rng``, labelled with ``props``."""
    rgb = clip_from_arrays(random_rgb(1, 16, 20, seed=seed), vs.RGBS)
    yuv = core.resize.Bicubic(rgb, format=vs.YUV420P8, matrix_s=matrix, range_s=rng)
    yuv = core.std.RemoveFrameProps(yuv, PROPS)
    return core.std.SetFrameProps(yuv, **props) if props else yuv


def _expected(yuv: vs.VideoNode, matrix: str, rng: str) -> np.ndarray:
    """By hand: to RGB with the given matrix and range, the network, and back."""
    bare = core.std.RemoveFrameProps(yuv, PROPS)
    rgb = frame_array(core.resize.Bicubic(bare, format=vs.RGBS, matrix_in_s=matrix,
                                          range_in_s=rng).get_frame(0))
    with torch.inference_mode():
        result = random_network(SPEC)(torch.from_numpy(rgb)[None]).clamp(0, 1).numpy()[0]
    back = core.resize.Bicubic(clip_from_arrays([result], vs.RGBS), format=yuv.format.id,
                               matrix_s=matrix, range_s=rng)
    return _planes(back.get_frame(0))


def _planes(frame: vs.VideoFrame) -> np.ndarray:
    return np.concatenate([np.asarray(frame[p]).astype(int).ravel() for p in range(3)])


def _assert_close(frame: vs.VideoFrame, expected: np.ndarray) -> None:
    assert np.abs(_planes(frame) - expected).max() <= 1


def test_properties_that_change_between_frames_are_followed(model):
    first = _yuv(1, "709", "limited", _Matrix=1, _Range=0)
    second = _yuv(2, "2020ncl", "full", _Matrix=9, _Range=1)
    out = upscale(core.std.Splice([first, second]), model, precision="fp32")
    frames = [out.get_frame(0), out.get_frame(1)]
    _assert_close(frames[0], _expected(first, "709", "limited"))
    _assert_close(frames[1], _expected(second, "2020ncl", "full"))
    assert (frames[0].props["_Matrix"], frames[0].props["_Range"]) == (1, 0)
    assert (frames[1].props["_Matrix"], frames[1].props["_Range"]) == (9, 1)


def test_gray_with_a_matrix_property(model):
    """A luma plane split from YUV keeps _Matrix: it failed on every frame before."""
    yuv = _yuv(3, "709", "limited", _Matrix=1, _Range=0)
    gray = core.std.ShufflePlanes(yuv, 0, vs.GRAY)
    assert gray.get_frame(0).props["_Matrix"] == 1
    got = np.asarray(upscale(gray, model, precision="fp32").get_frame(0)[0]).astype(int)
    luma = frame_array(core.resize.Point(core.std.RemoveFrameProps(gray, PROPS),
                                         format=vs.GRAYS, range_in_s="limited").get_frame(0))
    with torch.inference_mode():
        rgb = random_network(SPEC)(torch.from_numpy(np.repeat(luma, 3, 0))[None]).clamp(0, 1)
    y = (0.2126 * rgb[0, 0] + 0.7152 * rgb[0, 1] + 0.0722 * rgb[0, 2]).numpy()
    expected = np.rint(16 + 219 * y)  # limited-range 8-bit luma, by hand
    assert np.abs(got - expected).max() <= 1


@pytest.mark.parametrize(("props", "message"), [
    ({"_Matrix": 0}, r"_Matrix is 0 \(RGB\) on a YUV clip, so its planes hold G, B and R"),
    ({"_Matrix": 10}, r"_Matrix 10 \(BT.2020 constant luminance\) needs the transfer"),
    ({"_Matrix": 14}, r"_Matrix 14 \(ICtCp\) needs the transfer"),
])
def test_matrices_that_cannot_be_followed_are_refused(model, props, message):
    good = _yuv(4, "709", "limited")
    with pytest.raises(vs.Error, match=r"^upscale: frame 0: " + message):
        upscale(core.std.SetFrameProps(good, **props), model)
    # The same on a later frame: found while computing it, named by its number.
    later = core.std.Splice([good, core.std.SetFrameProps(good, **props)])
    out = upscale(later, model)
    out.get_frame(0)
    with pytest.raises(vs.Error, match=r"upscale: frame 1: " + message):
        out.get_frame(1)


@pytest.mark.parametrize(("props", "matrix", "rng", "warning"), [
    ({"_Matrix": 3}, "709", "limited", "_Matrix 3 is not a known YUV matrix"),
    ({"_Matrix": 99, "_Range": 1}, "709", "full", "_Matrix 99 is not a known YUV matrix"),
    ({"_Matrix": "bogus"}, "709", "limited", "_Matrix 'bogus' is not a known YUV matrix"),
    ({"_Matrix": "170m", "_Range": 1}, "170m", "full", None),
    ({"_Matrix": 6, "_Range": 5}, "170m", "limited", "_Range 5 is neither 0 nor 1"),
])
def test_unknown_values_fall_back_as_documented(model, props, matrix, rng, warning):
    clip = _yuv(5, matrix, rng, **props)
    messages: list[str] = []
    handle = core.add_log_handler(lambda kind, text: messages.append(text))
    try:
        got = upscale(clip, model, precision="fp32").get_frame(0)
    finally:
        core.remove_log_handler(handle)
    _assert_close(got, _expected(clip, matrix, rng))
    warnings = [m for m in messages if m.startswith("upscale: frame 0: ")]
    if warning is None:
        assert not warnings
    else:
        assert len(warnings) == 1 and warning in warnings[0], messages


@pytest.mark.parametrize("location", [1, 2, 3, None])
def test_chroma_siting_is_kept(model, location):
    """4:2:0 chroma sited centre, top-left or top is read and written with that siting
    and tagged so (it came back re-sited to left and tagged 0); no tag stays no tag."""
    rgb = clip_from_arrays(random_rgb(1, 16, 20, seed=6), vs.RGBS)
    siting = {} if location is None else {"chromaloc": location}
    yuv = core.resize.Bicubic(rgb, format=vs.YUV420P10, matrix_s="709", range_s="limited",
                              **siting)
    yuv = core.std.RemoveFrameProps(yuv, [*PROPS, "_ChromaLocation"])
    if location is not None:
        yuv = core.std.SetFrameProps(yuv, _ChromaLocation=location)
    got = upscale(yuv, model, precision="fp32").get_frame(0)
    # By hand: to RGB and back with the siting stated explicitly.
    bare = core.std.RemoveFrameProps(yuv, [*PROPS, "_ChromaLocation"])
    sited = core.resize.Bicubic(bare, format=vs.RGBS, matrix_in_s="709",
                                range_in_s="limited", chromaloc_in=location or 0)
    with torch.inference_mode():
        result = random_network(SPEC)(torch.from_numpy(frame_array(sited.get_frame(0)))[None])
    back = core.resize.Bicubic(clip_from_arrays([result.clamp(0, 1).numpy()[0]], vs.RGBS),
                               format=vs.YUV420P10, matrix_s="709", range_s="limited",
                               chromaloc=location or 0)
    _assert_close(got, _planes(back.get_frame(0)))
    assert got.props.get("_ChromaLocation") == location
