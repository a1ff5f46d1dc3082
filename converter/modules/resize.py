"""Modules of the resizing family (the rules: ``converter/layers/resize.py``): Interp,
Upsample, Unpool, BilinearInterpolate, Resize, Pad."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from converter.errors import ConverterError
from converter.layers.resize import InterpSpec, Padding, bilinear_source, resize_source
from converter.modules import exporting


class Interp(nn.Module):
    """Interp: crop by ``pad_beg``/``pad_end``, then resample with aligned corners.

    Source positions are computed in float32 whatever the tensor's dtype, as
    ``caffe_cpu_interp2`` does (``float rheight = (in - 1) / (out - 1)``, position
    ``rheight * i``, its integer part and fraction), so a float64 model reproduces a
    float64 Caffe exactly; ``torch.nn.functional.interpolate`` would compute them in the
    tensor's dtype. An output of the cropped input's size is a copy.
    """

    def __init__(self, spec: InterpSpec, where: str):
        super().__init__()
        self.spec = spec
        self.where = where

    def extra_repr(self) -> str:
        return repr(self.spec)

    def forward(self, x: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        spec = self.spec
        height, width = x.shape[2:]
        ref_shape = None if reference is None else tuple(reference.shape)
        in_h, in_w, out_h, out_w = spec.output_size(height, width, ref_shape, self.where)
        x = x[:, :, -spec.pad_beg : -spec.pad_beg + in_h, -spec.pad_beg : -spec.pad_beg + in_w]
        if (in_h, in_w) == (out_h, out_w):
            return x.clone()
        rows, row_weight = _positions(in_h, out_h, spec.nearest, x.device)
        cols, col_weight = _positions(in_w, out_w, spec.nearest, x.device)
        if spec.nearest:
            return x[:, :, rows[0]][:, :, :, cols[0]]
        top, bottom = x[:, :, rows[0]], x[:, :, rows[1]]
        lam_h = row_weight.to(x.dtype)[:, None]
        lam_w = col_weight.to(x.dtype)
        # Caffe's order: h0 * (w0 * p00 + w1 * p01) + h1 * (w0 * p10 + w1 * p11).
        upper = (1 - lam_w) * top[..., cols[0]] + lam_w * top[..., cols[1]]
        lower = (1 - lam_w) * bottom[..., cols[0]] + lam_w * bottom[..., cols[1]]
        return (1 - lam_h) * upper + lam_h * lower


def _positions(size_in: int, size_out: int, nearest: bool, device):
    """([first index, second index], fraction) per output position, in float32 arithmetic.

    The second index is the next input position, or the same one at the last; nearest
    rounds the position half up (``floor(pos + 0.5)``) and takes no fraction.
    """
    f32 = torch.float32
    if size_out > 1:
        ratio = torch.tensor(size_in - 1, dtype=f32) / torch.tensor(size_out - 1, dtype=f32)
    else:
        ratio = torch.tensor(0.0, dtype=f32)
    position = ratio * torch.arange(size_out, dtype=f32)
    if nearest:
        index = torch.floor(position.double() + 0.5).long()
        return [index.to(device)], None
    index = position.long()  # truncation, as the int conversion in Caffe
    fraction = position - index.to(f32)
    following = torch.where(index < size_in - 1, index + 1, index)
    return [index.to(device), following.to(device)], fraction.to(device)


class NearestUpsample(nn.Module):
    """Each value repeated ``scale`` times along the last ``axes`` axes (2: H and W)."""

    def __init__(self, scale: int, axes: int):
        super().__init__()
        self.scale, self.axes = scale, axes

    def extra_repr(self) -> str:
        return f"scale={self.scale}, axes={self.axes}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for axis in range(x.dim() - self.axes, x.dim()):
            x = x.repeat_interleave(self.scale, dim=axis)
        return x


class Unpool(nn.Module):
    """Unpooling by a MAX pooling mask (MaxUnPool; SegNet's Upsample).

    ``forward(x, mask)``: a zero (N, C, height, width) top where, plane by plane, each x
    value lands at the flat position ``int(mask)`` names; when two values name one position
    the later one (row-major) stays, as Caffe's loop leaves it. A position outside the top
    raises ConverterError (Caffe aborts, or writes out of bounds for a negative one).
    """

    def __init__(self, height: int, width: int, where: str):
        super().__init__()
        self.height, self.width, self.where = height, width, where

    def extra_repr(self) -> str:
        return f"height={self.height}, width={self.width}"

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        size = self.height * self.width
        values = x.reshape(n, c, -1)
        index = mask.reshape(n, c, -1).to(torch.int64)  # C++'s static_cast<int> truncates
        if not exporting() and index.numel() and (index.min() < 0 or index.max() >= size):
            raise ConverterError(
                f"{self.where}: the mask names positions {int(index.min())}..{int(index.max())}"
                f", outside the {self.height}x{self.width} output"
            )
        # the last writer of each position: the largest source position naming it
        order = torch.arange(values.shape[-1], device=x.device).expand_as(index)
        last = torch.full((n, c, size), -1, dtype=torch.int64, device=x.device)
        last = last.scatter_reduce(2, index, order, reduce="amax")
        y = torch.where(last >= 0, values.gather(2, last.clamp(min=0)), 0.0)
        return y.reshape(n, c, self.height, self.width)


class Bilinear(nn.Module):
    """BilinearInterpolate: bilinear resize to ``size`` from the fork's float32 source
    coordinates (corners aligned or half-pixel), each between neighbours ``h0 =
    clamp(floor(src), 0, H - 2)`` and ``h0 + 1``. torch's interpolate gives the same up to
    the rounding of the coordinates."""

    def __init__(self, size: tuple[int, int], align_corners: bool, where: str):
        super().__init__()
        self.size, self.align_corners, self.where = tuple(size), align_corners, where

    def extra_repr(self) -> str:
        return f"size={self.size}, align_corners={self.align_corners}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < 2:
            raise ConverterError(f"{self.where}: needs an input of at least 2x2, found {x.shape}")
        for axis, out in zip((-2, -1), self.size):
            source = bilinear_source(x.shape[axis], out, self.align_corners)
            first = np.clip(np.floor(source), 0, x.shape[axis] - 2).astype(np.int64)
            x = _interpolate_along(x, axis, first, source - first, first + 1 < x.shape[axis])
        return x


class AsymmetricBilinear(nn.Module):
    """The Resize fork layer's bilinear resize: source ``i * in / out`` (no half-pixel
    offset, computed in float32), and a neighbour past the last row or column dropped
    rather than clamped, so the last rows and columns of an upscale fade."""

    def __init__(self, size: tuple[int, int]):
        super().__init__()
        self.size = tuple(size)

    def extra_repr(self) -> str:
        return f"size={self.size}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for axis, out in zip((-2, -1), self.size):
            source = resize_source(x.shape[axis], out)
            first = np.floor(source).astype(np.int64)
            x = _interpolate_along(x, axis, first, source - first, first + 1 < x.shape[axis])
        return x


def _interpolate_along(
    x: torch.Tensor, axis: int, first: np.ndarray, frac: np.ndarray, kept: np.ndarray
) -> torch.Tensor:
    """Along one axis: ``x[first] * (1 - frac) + x[first + 1] * frac``, the second term only
    where ``kept`` (bilinear weights are separable, and so is dropping a neighbour)."""
    size = x.shape[axis]
    view = [1] * x.dim()
    view[axis] = len(first)
    near = x.index_select(axis, torch.from_numpy(first).to(x.device))
    far = x.index_select(axis, torch.from_numpy(np.minimum(first + 1, size - 1)).to(x.device))
    frac = torch.from_numpy(frac.astype(np.float64)).to(x.device, x.dtype).reshape(view)
    kept = torch.from_numpy(kept).to(x.device).reshape(view)
    return near * (1 - frac) + torch.where(kept, far * frac, 0.0)


class Pad(nn.Module):
    """The Pad fork layer: constant / replicate / reflect padding of H and W, or, when all
    four amounts are negative, a crop."""

    def __init__(self, pad: Padding):
        super().__init__()
        self.pad = pad

    def extra_repr(self) -> str:
        return repr(self.pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.pad
        if p.crop:
            height, width = x.shape[-2], x.shape[-1]
            return x[..., -p.up : height + p.down, -p.left : width + p.right]
        amounts = (p.left, p.right, p.up, p.down)
        if p.mode == "constant":
            return F.pad(x, amounts, value=p.value)
        return F.pad(x, amounts, mode=p.mode)
