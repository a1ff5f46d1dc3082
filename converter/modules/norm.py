"""Modules of the normalisation family: BatchNorm without affine part, Scale, Bias, LRN, and
the forks' BN and Normalize."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from converter import caffe_pb2


class BatchNorm(nn.Module):
    """Caffe's BatchNorm (no affine part): ``(x - mean) / sqrt(var + eps)`` per channel.

    With ``use_global_stats: false`` Caffe normalises with the batch mean and the biased
    batch variance even in the TEST phase, so this module does too, whatever ``training`` is.
    """

    def __init__(self, channels: int, eps: float, use_global_stats: bool):
        super().__init__()
        self.eps = eps
        self.use_global_stats = use_global_stats
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def extra_repr(self) -> str:
        return f"{len(self.running_mean)}, eps={self.eps}, use_global_stats={self.use_global_stats}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        view = (1, -1) + (1,) * (x.dim() - 2)
        if self.use_global_stats:
            mean, var = self.running_mean.reshape(view), self.running_var.reshape(view)
        else:
            dims = [0, *range(2, x.dim())]
            mean = x.mean(dim=dims, keepdim=True)
            var = (x - mean).square().mean(dim=dims, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps)


def along(t: torch.Tensor, axis: int, ndim: int) -> torch.Tensor:
    """View ``t`` so that its axes line up with axes ``axis...`` of an ``ndim``-D tensor."""
    return t.reshape((1,) * axis + tuple(t.shape) + (1,) * (ndim - axis - t.dim()))


class Scale(nn.Module):
    """Caffe's Scale: ``x * gamma (+ beta)``, gamma learned or given as a second input."""

    def __init__(self, axis: int, shape: Sequence[int], learned: bool, bias: bool):
        super().__init__()
        self.axis = axis
        self.weight = nn.Parameter(torch.ones(tuple(shape))) if learned else None
        self.bias = nn.Parameter(torch.zeros(tuple(shape))) if bias else None

    def forward(self, x: torch.Tensor, factor: torch.Tensor | None = None) -> torch.Tensor:
        gamma = self.weight if factor is None else factor
        y = x * along(gamma, self.axis, x.dim())
        if self.bias is not None:
            y = y + along(self.bias, self.axis, x.dim())
        return y


class Bias(nn.Module):
    """Caffe's Bias: ``x + b``, b learned or given as a second input."""

    def __init__(self, axis: int, shape: Sequence[int] | None):
        super().__init__()
        self.axis = axis
        self.bias = nn.Parameter(torch.zeros(tuple(shape))) if shape is not None else None

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        b = self.bias if bias is None else bias
        return x + along(b, self.axis, x.dim())


class LRN(nn.Module):
    """Caffe's local response normalisation, across channels or within a channel."""

    def __init__(self, param: caffe_pb2.LRNParameter):
        super().__init__()
        self.size = param.local_size
        self.alpha, self.beta, self.k = param.alpha, param.beta, param.k
        self.across = param.norm_region == param.ACROSS_CHANNELS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = (self.size - 1) // 2
        square = x * x
        if self.across:
            # scale = k + alpha / n * (sum of squares over n neighbouring channels)
            padded = F.pad(square, (0, 0, 0, 0, half, half))
            channels = x.shape[1]
            total = padded[:, 0:channels]
            for i in range(1, self.size):
                total = total + padded[:, i : i + channels]
            scale = self.k + (self.alpha / self.size) * total
        else:
            # Caffe builds this from AVE pooling (pad included) and Power with shift 1.
            mean = F.avg_pool2d(square, self.size, 1, half, count_include_pad=True)
            scale = 1.0 + self.alpha * mean
        return x * scale.pow(-self.beta)


class BN(nn.Module):
    """The forks' BN (``converter.layers.norm.bn_variant`` says which computes what).

    ``statistics``: "none": ``x * weight + bias``; "batch" / "stored": ``(x - mean) /
    sqrt(var + eps) * weight + bias`` with the batch's mean and biased variance over every
    axis but ``axis``, or ``running_mean`` / ``running_var``. ``eps`` is a buffer, so a
    converted file carries the value the caffemodel's blob count decided.
    """

    def __init__(self, channels: int, axis: int, statistics: str, eps: float):
        super().__init__()
        self.axis = axis
        self.statistics = statistics
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        if statistics == "stored":
            self.register_buffer("running_mean", torch.zeros(channels))
            self.register_buffer("running_var", torch.ones(channels))
        if statistics != "none":
            self.register_buffer("eps", torch.tensor(eps, dtype=torch.float64))

    def extra_repr(self) -> str:
        return f"{len(self.weight)}, axis={self.axis}, statistics={self.statistics}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        view = [1] * x.dim()
        view[self.axis] = -1
        weight, bias = self.weight.reshape(view), self.bias.reshape(view)
        if self.statistics == "none":
            return x * weight + bias
        if self.statistics == "stored":
            mean, var = self.running_mean.reshape(view), self.running_var.reshape(view)
        else:
            dims = [d for d in range(x.dim()) if d != self.axis]
            mean = x.mean(dim=dims, keepdim=True)
            var = (x - mean).square().mean(dim=dims, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps.to(x.dtype)) * weight + bias


class Normalize(nn.Module):
    """SSD's Normalize: ``x / sqrt(sum of x^2 + eps) * scale``.

    The sum runs over every axis but the batch (``across_spatial``) or over the channels
    at each position; eps sits inside the square root. ``weight`` is one scale per channel
    ``(C,)`` or a shared ``()``.
    """

    def __init__(self, shape: Sequence[int], across_spatial: bool, eps: float):
        super().__init__()
        self.across_spatial, self.eps = across_spatial, eps
        self.weight = nn.Parameter(torch.ones(tuple(shape)))

    def extra_repr(self) -> str:
        return f"across_spatial={self.across_spatial}, eps={self.eps}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(1, x.dim())) if self.across_spatial else (1,)
        norm = torch.sqrt(x.square().sum(dim=dims, keepdim=True) + self.eps)
        scale = self.weight if self.weight.dim() == 0 else along(self.weight, 1, x.dim())
        return x / norm * scale


class MVN(nn.Module):
    """Caffe's MVN: per sample and channel (or per sample, ``across_channels``) subtract the
    mean and, with ``normalize_variance``, divide by ``sqrt(biased variance) + eps``: Caffe
    adds eps to the standard deviation, not to the variance (``mvn_layer.cpp``)."""

    def __init__(self, normalize_variance: bool, across_channels: bool, eps: float):
        super().__init__()
        self.normalize_variance = normalize_variance
        self.across_channels = across_channels
        self.eps = eps

    def extra_repr(self) -> str:
        return (
            f"normalize_variance={self.normalize_variance}, "
            f"across_channels={self.across_channels}, eps={self.eps}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = x.shape[0] if self.across_channels else x.shape[0] * x.shape[1]
        flat = x.reshape(groups, -1)
        centred = flat - flat.mean(dim=1, keepdim=True)
        if self.normalize_variance:
            std = centred.square().mean(dim=1, keepdim=True).sqrt()
            centred = centred / (std + self.eps)
        return centred.reshape(x.shape)
