"""Cut and stitch on a torch device (CUDA, MPS) when the frame fits there.

The frame goes to the device once, in the network's input type; tiles are cut there, the
network's outputs stay there and are weighted into a float32 frame there, which is
checked for NaN / infinity, clamped, scaled, rounded and converted to the output's sample
type there; only the finished planes come back (for an 8-bit frame a quarter of the bytes
of float32 tiles). Same weights, products and order of sums as the host's writer
(:mod:`vs_coreml_esrgan.stitching`), so the result is the same. Part of the tiling engine:
it knows no backend, only a callable on tensors; torch is imported when it runs.

Not measured on a GPU (none was available when it was written); the tests run it on CPU
tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from .stitching import NonFiniteOutput
from .tiling import TilePlan, pad_to_tile

if TYPE_CHECKING:
    import torch

# Device memory a frame may take, as a share of what is free: the float32 frame, the
# finished frame, the source and a batch of outputs, with room for the network.
_SHARE_OF_FREE = 0.5


def frame_bytes(plan: TilePlan, channels: int, batch: int) -> int:
    """Device memory the stitching itself needs: float32 output frame, its finished copy
    (at most as large), the padded source and one batch of tile outputs (float32)."""
    scale = plan.x.scale
    out = channels * plan.x.length * scale * plan.y.length * scale * 4
    source = channels * plan.x.padded_length * plan.y.padded_length * 4
    tiles = batch * channels * plan.x.tile * scale * plan.y.tile * scale * 4
    return 2 * out + source + tiles


def fits(device: torch.device, nbytes: int) -> bool:
    """Whether ``nbytes`` fit in the share of ``device``'s free memory kept for frames.
    CUDA: ``torch.cuda.mem_get_info``; MPS: its recommended working set less what torch
    holds (``torch.mps.recommended_max_memory``, torch >= 2.3); other devices: False."""
    import torch

    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
    elif device.type == "mps" and hasattr(torch.mps, "recommended_max_memory"):
        free = torch.mps.recommended_max_memory() - torch.mps.current_allocated_memory()
    else:
        return False
    return nbytes <= free * _SHARE_OF_FREE


def upscale_on_device(image: np.ndarray, plan: TilePlan,
                      run: Callable[[torch.Tensor], torch.Tensor],
                      planes: Sequence[np.ndarray], *, peak: float, batch: int,
                      device: torch.device, dtype: torch.dtype) -> None:
    """Upscale a ``(C, H, W)`` host image into an output frame's host ``planes``.

    ``run`` takes ``(batch, C, th, tw)`` tensors on ``device`` in ``dtype`` and returns
    ``(batch, C', th * scale, tw * scale)`` tensors there (a short last batch repeats its
    last tile). ``planes`` and ``peak`` as for :class:`vs_coreml_esrgan.stitching.
    FrameWriter`. Raises NonFiniteOutput (nothing written) for NaN or infinite outputs,
    ValueError for shapes that do not fit.
    """
    import torch

    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    with torch.inference_mode():
        _upscale(image, plan, run, planes, peak, batch, device, dtype)


def _upscale(image: np.ndarray, plan: TilePlan, run: Callable[[torch.Tensor], torch.Tensor],
             planes: Sequence[np.ndarray], peak: float, batch: int, device: torch.device,
             dtype: torch.dtype) -> None:
    import torch

    scale = plan.x.scale
    tw, th = plan.tile_size
    source = torch.from_numpy(np.ascontiguousarray(pad_to_tile(image, plan))).to(device, dtype)
    out = torch.zeros((len(planes), plan.y.length * scale, plan.x.length * scale),
                      dtype=torch.float32, device=device)
    weights_y = [torch.from_numpy(span.weights).to(device) for span in plan.y.spans]
    weights_x = [torch.from_numpy(span.weights).to(device) for span in plan.x.spans]
    offsets = list(plan.tiles())
    columns = len(plan.x.starts)
    for first in range(0, len(offsets), batch):
        group = range(first, min(first + batch, len(offsets)))
        picks = [offsets[group[min(i, len(group) - 1)]] for i in range(batch)]
        tiles = torch.stack([source[:, y:y + th, x:x + tw] for x, y in picks])
        result = run(tiles)
        expected = (batch, len(planes), th * scale, tw * scale)
        if tuple(result.shape) != expected:
            raise ValueError(f"backend returned shape {tuple(result.shape)}, expected "
                             f"{expected}")
        for i, index in enumerate(group):
            row, column = divmod(index, columns)
            span_y, span_x = plan.y.spans[row], plan.x.spans[column]
            y0, x0 = plan.y.output_origin(row), plan.x.output_origin(column)
            part = result[i, :, span_y.start - y0:span_y.stop - y0,
                          span_x.start - x0:span_x.stop - x0].float()
            weight = weights_y[row][:, None] * weights_x[column][None, :]
            out[:, span_y.start:span_y.stop, span_x.start:span_x.stop] += part * weight
    bad = int((~torch.isfinite(out)).sum())
    if bad:
        raise NonFiniteOutput(bad, out.numel())
    _finish_into(out, planes, peak)


def _finish_into(out: torch.Tensor, planes: Sequence[np.ndarray], peak: float) -> None:
    """Clamp, scale, round (half to even, as numpy's rint) and convert on the device, then
    copy each plane to the host once."""
    import torch

    out.clamp_(0.0, 1.0)
    kind = planes[0].dtype
    if kind == np.uint8:
        finished = out.mul_(peak).round_().to(torch.uint8)
    elif kind == np.uint16:
        # int16 carries the bits: values above 32767 are shifted down by 32768 first and
        # the top bit is put back on the host
        finished = out.mul_(peak).round_()
        wide = peak > 32767
        if wide:
            finished.sub_(32768.0)
        finished = finished.to(torch.int16)
    elif kind == np.float16:
        finished = out.to(torch.float16)
    elif kind == np.float32:
        finished = out
    else:
        raise ValueError(f"planes of {kind} are not an output sample type")
    for plane, channel in zip(planes, finished, strict=True):
        host = plane.view(np.int16) if kind == np.uint16 else plane
        torch.from_numpy(host).copy_(channel)
        if kind == np.uint16 and wide:
            plane ^= np.uint16(0x8000)
