"""Caffe's pooling as a module: its output size, its windows and its AVE divisor."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from google.protobuf import text_format
from torch import nn

from converter.layers.pool import PoolGeometry, pool_geometry, spp_levels

_FLT_MAX = float(np.finfo(np.float32).max)


class _PoolModule(nn.Module):
    """A module holding a PoolingParameter or SPPParameter (serialized: protobuf messages do
    not pickle) whose method is MAX or AVE (the shape rule refused any other)."""

    def __init__(self, param, where: str, mask: bool = False):
        super().__init__()
        self.param_type = type(param)
        self.param_bytes = param.SerializeToString()
        self.is_max = param.pool == param.MAX
        self.mask = mask and self.is_max
        self.where = where

    @property
    def param(self):
        return self.param_type.FromString(self.param_bytes)

    def extra_repr(self) -> str:
        return text_format.MessageToString(self.param, as_one_line=True)


class Pooling(_PoolModule):
    """Caffe's MAX/AVE pooling with its output size rule and AVE divisor.

    The geometry is computed from the input's shape at run time with ``pool_geometry``.
    When torch's pooling gives exactly Caffe's windows (same output size, pad at most half
    the kernel) it is used directly: ``ceil_mode`` follows ``round_mode`` and AVE uses
    ``count_include_pad=True``, whose divisor is Caffe's (window clipped to ``in + pad``).
    Otherwise the input is padded (or cropped) explicitly to span exactly Caffe's windows:
    this reproduces Caffe's extra ceil-mode row of empty windows when pad is 0 and the stride
    exceeds the kernel, where Caffe gives -FLT_MAX (MAX) and 0 / divisor, i.e. NaN or -0
    (AVE).

    With ``mask`` (MAX only) it returns ``(pooled, mask)``: the mask holds, per output,
    the flat index ``h * W + w`` in the input plane of the window's first maximum, -1
    where no value exceeded -FLT_MAX, in the input's dtype (Caffe's mask top is a float blob).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        param = self.param
        geo = pool_geometry(param, x.shape[-2], x.shape[-1], self.where)
        return pool2d(x, geo, self.is_max, param.round_mode == param.CEIL, self.mask)


class SPP(_PoolModule):
    """Caffe's spatial pyramid pooling: level ``l`` pools into ``2^l x 2^l`` bins (Caffe's
    pooling rule, geometry from ``spp_levels``), each level flattened to ``(N, C * bins^2)``
    and the levels concatenated; one level gives the 4-D pooled blob itself."""

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        height, width = x.shape[-2], x.shape[-1]
        levels = [
            pool2d(x, pool_geometry(level, height, width, self.where), self.is_max, ceil=True)
            for level in spp_levels(self.param, height, width)
        ]
        if len(levels) == 1:
            return levels[0]
        return torch.cat([level.flatten(1) for level in levels], dim=1)


def pool2d(x: torch.Tensor, geo: PoolGeometry, is_max: bool, ceil: bool, mask: bool = False):
    """Caffe's MAX or AVE pooling of ``x`` (N, C, H, W) with the windows of ``geo``; with
    ``mask`` (MAX), ``(pooled, Caffe's mask top)``."""
    sizes = (x.shape[-2], x.shape[-1])
    torch_out = [
        _torch_pool_size(n, k, s, p, ceil)
        for n, k, s, p in zip(sizes, geo.kernel, geo.stride, geo.pad)
    ]
    fits = all(2 * p <= k for k, p in zip(geo.kernel, geo.pad))
    if fits and tuple(torch_out) == geo.output:
        if mask:
            pooled, index = F.max_pool2d(
                x, geo.kernel, geo.stride, geo.pad, ceil_mode=ceil, return_indices=True
            )
            return pooled, _caffe_mask(pooled, index)
        if is_max:
            return F.max_pool2d(x, geo.kernel, geo.stride, geo.pad, ceil_mode=ceil)
        return F.avg_pool2d(
            x, geo.kernel, geo.stride, geo.pad, ceil_mode=ceil, count_include_pad=True
        )
    return _explicit(x, geo, is_max, mask)


def _explicit(x: torch.Tensor, geo: PoolGeometry, is_max: bool, mask: bool):
    """Pad (or crop) the input to span exactly Caffe's windows, then pool without padding."""
    sizes = (x.shape[-2], x.shape[-1])
    # Extent of Caffe's windows from -pad: (out - 1) * stride + kernel per axis.
    right = [
        (o - 1) * s + k - p - n
        for n, k, s, p, o in zip(sizes, geo.kernel, geo.stride, geo.pad, geo.output)
    ]
    x = x[..., : sizes[0] + min(right[0], 0), : sizes[1] + min(right[1], 0)]
    padding = (geo.pad[1], max(right[1], 0), geo.pad[0], max(right[0], 0))
    if mask:
        padded = F.pad(x, padding, value=-_FLT_MAX)
        pooled, index = F.max_pool2d(padded, geo.kernel, geo.stride, return_indices=True)
        # indices into the padded plane -> the input plane's h * W + w
        rows = torch.div(index, padded.shape[-1], rounding_mode="floor") - geo.pad[0]
        cols = index % padded.shape[-1] - geo.pad[1]
        return pooled, _caffe_mask(pooled, rows * sizes[1] + cols)
    if is_max:
        # Pads never win against real values; a window of pads alone gives -FLT_MAX.
        padded = F.pad(x, padding, value=-_FLT_MAX)
        return F.max_pool2d(padded, geo.kernel, geo.stride)
    padded = F.pad(x, padding, value=0.0)
    total = F.avg_pool2d(padded, geo.kernel, geo.stride, divisor_override=1)
    divisor = [
        _ave_divisor(n, k, s, p, o, x.device)
        for n, k, s, p, o in zip(sizes, geo.kernel, geo.stride, geo.pad, geo.output)
    ]
    return total / (divisor[0][:, None] * divisor[1][None, :]).to(x.dtype)


def _caffe_mask(pooled: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Caffe's mask top: the index as a float, -1 where nothing beat -FLT_MAX (Caffe compares
    strictly, so a window of pads, -inf or -FLT_MAX keeps its initial -1)."""
    return torch.where(pooled > -_FLT_MAX, index, -1).to(pooled.dtype)


def _torch_pool_size(size: int, kernel: int, stride: int, pad: int, ceil: bool) -> int:
    """Output length torch's pooling gives (it drops a last window starting past in + pad)."""
    span = size + 2 * pad - kernel
    out = (-(-span // stride) if ceil else span // stride) + 1
    if ceil and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _ave_divisor(size: int, kernel: int, stride: int, pad: int, out: int, device) -> torch.Tensor:
    """Caffe's AVE pool size along one axis: ``min(start + k, in + pad) - start`` per window."""
    starts = torch.arange(out, device=device) * stride - pad
    return torch.clamp(starts + kernel, max=size + pad) - starts
