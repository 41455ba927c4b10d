"""The filter's per-frame pipeline as it was before tiles went straight into the frame
(commit 0e56f30): a float32 copy of the frame, ``upscale_tiled`` into a float32 frame,
then clamp, scale, round and copy. The reference the fused writer is compared against."""

from __future__ import annotations

import vapoursynth as vs

from vs_coreml_esrgan import colour, frames, tiling


def reference_upscale(clip: vs.VideoNode, backend, plan: tiling.TilePlan, *,
                      batch: int = 1) -> vs.VideoNode:
    rgb, restore = colour.to_rgb(clip)
    scale = backend.scale
    blank = vs.core.std.BlankClip(rgb, width=rgb.width * scale, height=rgb.height * scale,
                                  keep=True)

    def render(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        image = frames.read_planes(f[0])
        result = tiling.upscale_tiled(image, plan, backend, batch=batch,
                                      dtype=backend.input_dtype)
        out = f[1].copy()
        frames.write_planes(result, out)
        for key, value in f[0].props.items():
            out.props[key] = value
        return out

    return restore(vs.core.std.ModifyFrame(blank, clips=[rgb, blank], selector=render))
