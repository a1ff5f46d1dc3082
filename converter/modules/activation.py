"""Element-wise modules that ``torch.nn`` lacks in Caffe's exact form."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from converter.modules.norm import along


class PReLU(nn.Module):
    """Caffe's PReLU: ``max(x, 0) + a_c * min(x, 0)``, one slope per channel or one shared."""

    def __init__(self, shape: Sequence[int]):
        super().__init__()
        self.weight = nn.Parameter(torch.full(tuple(shape), 0.25))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        slope = self.weight
        if slope.dim() == 1:
            slope = along(slope, 1, x.dim())
        return F.relu(x) + slope * torch.clamp(x, max=0)


class Power(nn.Module):
    """Caffe's Power: ``(shift + scale * x) ^ power``, a constant when ``power * scale == 0``."""

    def __init__(self, power: float, scale: float, shift: float):
        super().__init__()
        self.power, self.scale, self.shift = power, scale, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.power * self.scale == 0:
            value = 1.0 if self.power == 0 else math.pow(self.shift, self.power)
            return torch.full_like(x, value)
        y = x
        if self.scale != 1:
            y = y * self.scale
        if self.shift != 0:
            y = y + self.shift
        if self.power != 1:
            y = y.pow(self.power)
        return y


class AbsVal(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.abs(x)


class ReLU6(nn.Module):
    """inisis/caffe's ReLU6: ``min(max(x, 0) + negative_slope * min(x, 0), threshold)``."""

    def __init__(self, negative_slope: float, threshold: float):
        super().__init__()
        self.negative_slope, self.threshold = negative_slope, threshold

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}, threshold={self.threshold}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(x)
        if self.negative_slope != 0:
            y = y + self.negative_slope * torch.clamp(x, max=0)
        return torch.clamp(y, max=self.threshold)


class HardSigmoid(nn.Module):
    """``max(0, min(1, alpha * x + beta))`` (torch's Hardsigmoid fixes alpha 1/6, beta 1/2)."""

    def __init__(self, alpha: float, beta: float):
        super().__init__()
        self.alpha, self.beta = alpha, beta

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x * self.alpha + self.beta, 0.0, 1.0)


class BNLL(nn.Module):
    """Caffe's BNLL: ``log(1 + exp(x))``, written so that neither branch overflows."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=0) + torch.log1p(torch.exp(-x.abs()))


class Threshold(nn.Module):
    """Caffe's Threshold: 1 where ``x > threshold`` (strictly), else 0."""

    def __init__(self, threshold: float):
        super().__init__()
        self.threshold = threshold

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x > self.threshold).to(x.dtype)


class Exp(nn.Module):
    """Caffe's Exp as it computes it: ``outer * exp(inner * x)``."""

    def __init__(self, inner: float, outer: float):
        super().__init__()
        self.inner, self.outer = inner, outer

    def extra_repr(self) -> str:
        return f"inner={self.inner}, outer={self.outer}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.exp(x if self.inner == 1 else x * self.inner)
        return y if self.outer == 1 else y * self.outer


class Log(nn.Module):
    """Caffe's Log: ``log(shift + scale * x) * base_scale`` (``base_scale = 1 / ln(base)``)."""

    def __init__(self, scale: float, shift: float, base_scale: float):
        super().__init__()
        self.scale, self.shift, self.base_scale = scale, shift, base_scale

    def extra_repr(self) -> str:
        return f"scale={self.scale}, shift={self.shift}, base_scale={self.base_scale}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale != 1:
            x = x * self.scale
        if self.shift != 0:
            x = x + self.shift
        y = torch.log(x)
        return y if self.base_scale == 1 else y * self.base_scale


class Clip(nn.Module):
    """Caffe's Clip: ``max(min, min(max, x))`` (``min`` wins if min > max, unlike
    ``torch.clamp``, where max wins)."""

    def __init__(self, min: float, max: float):
        super().__init__()
        self.min, self.max = min, max

    def extra_repr(self) -> str:
        return f"min={self.min}, max={self.max}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(max=self.max).clamp(min=self.min)


class Swish(nn.Module):
    """Caffe's Swish: ``x * sigmoid(beta * x)``."""

    def __init__(self, beta: float):
        super().__init__()
        self.beta = beta

    def extra_repr(self) -> str:
        return f"beta={self.beta}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x if self.beta == 1 else x * self.beta)
