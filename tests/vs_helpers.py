"""Building VapourSynth clips from numpy arrays, and reading them back."""

from __future__ import annotations

import numpy as np
import vapoursynth as vs


def clip_from_arrays(arrays: list[np.ndarray], fmt: int, **props) -> vs.VideoNode:
    """A clip whose frame n holds ``arrays[n]`` (planes, H, W), already in the format's
    sample type and range, with ``props`` set on every frame."""
    core = vs.core
    height, width = arrays[0].shape[1:]
    blank = core.std.BlankClip(format=fmt, width=width, height=height, length=len(arrays),
                               keep=True)

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        for p in range(out.format.num_planes):
            np.copyto(np.asarray(out[p]), arrays[n][p], casting="unsafe")
        for key, value in props.items():
            out.props[key] = value
        return out

    return core.std.ModifyFrame(blank, blank, fill)


def frame_array(frame: vs.VideoFrame) -> np.ndarray:
    """Planes of a (non-subsampled) frame as one (planes, H, W) array, in the frame's type."""
    return np.stack([np.asarray(frame[p]) for p in range(frame.format.num_planes)])


def random_rgb(length: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth-ish random RGB float frames in [0, 1] (noise blurred a little)."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(length):
        noise = rng.random((3, height + 2, width + 2), dtype=np.float32)
        smooth = (noise[:, 1:-1, 1:-1] * 4 + noise[:, :-2, 1:-1] + noise[:, 2:, 1:-1]
                  + noise[:, 1:-1, :-2] + noise[:, 1:-1, 2:]) / 8
        frames.append(smooth.astype(np.float32))
    return frames
