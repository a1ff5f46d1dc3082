"""Caffe's pooling as a module: its output size, its windows and its AVE divisor."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from google.protobuf import text_format
from torch import nn

from converter import caffe_pb2
from converter.errors import ConverterError
from converter.layers.pool import pool_geometry

_FLT_MAX = float(np.finfo(np.float32).max)


class Pooling(nn.Module):
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

    def __init__(self, param: caffe_pb2.PoolingParameter, where: str, mask: bool = False):
        super().__init__()
        if param.pool not in (param.MAX, param.AVE):
            name = caffe_pb2.PoolingParameter.PoolMethod.Name(param.pool)
            raise ConverterError(f"{where}: pooling method {name} is not supported (MAX, AVE)")
        self.param_bytes = param.SerializeToString()  # protobuf messages do not pickle
        self.is_max = param.pool == param.MAX
        self.mask = mask and self.is_max
        self.where = where

    def extra_repr(self) -> str:
        param = caffe_pb2.PoolingParameter.FromString(self.param_bytes)
        return text_format.MessageToString(param, as_one_line=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        height, width = x.shape[-2], x.shape[-1]
        param = caffe_pb2.PoolingParameter.FromString(self.param_bytes)
        geo = pool_geometry(param, height, width, self.where)
        ceil = param.round_mode == param.CEIL
        sizes = (height, width)
        torch_out = [
            _torch_pool_size(n, k, s, p, ceil)
            for n, k, s, p in zip(sizes, geo.kernel, geo.stride, geo.pad)
        ]
        fits = all(2 * p <= k for k, p in zip(geo.kernel, geo.pad))
        if fits and tuple(torch_out) == geo.output:
            if self.mask:
                pooled, index = F.max_pool2d(
                    x, geo.kernel, geo.stride, geo.pad, ceil_mode=ceil, return_indices=True
                )
                return pooled, _caffe_mask(pooled, index)
            if self.is_max:
                return F.max_pool2d(x, geo.kernel, geo.stride, geo.pad, ceil_mode=ceil)
            return F.avg_pool2d(
                x, geo.kernel, geo.stride, geo.pad, ceil_mode=ceil, count_include_pad=True
            )
        return self._explicit(x, geo)

    def _explicit(self, x: torch.Tensor, geo):
        sizes = (x.shape[-2], x.shape[-1])
        # Extent of Caffe's windows from -pad: (out - 1) * stride + kernel per axis.
        right = [
            (o - 1) * s + k - p - n
            for n, k, s, p, o in zip(sizes, geo.kernel, geo.stride, geo.pad, geo.output)
        ]
        x = x[..., : sizes[0] + min(right[0], 0), : sizes[1] + min(right[1], 0)]
        padding = (geo.pad[1], max(right[1], 0), geo.pad[0], max(right[0], 0))
        if self.mask:
            padded = F.pad(x, padding, value=-_FLT_MAX)
            pooled, index = F.max_pool2d(padded, geo.kernel, geo.stride, return_indices=True)
            # indices into the padded plane -> the input plane's h * W + w
            rows = torch.div(index, padded.shape[-1], rounding_mode="floor") - geo.pad[0]
            cols = index % padded.shape[-1] - geo.pad[1]
            return pooled, _caffe_mask(pooled, rows * sizes[1] + cols)
        if self.is_max:
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
