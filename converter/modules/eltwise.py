"""Caffe's Eltwise, and the SENet fork's Axpy, as modules."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Eltwise(nn.Module):
    """Caffe's Eltwise: SUM (with optional coefficients), PROD or MAX of its inputs."""

    def __init__(self, operation: str, coeff: Sequence[float]):
        super().__init__()
        self.operation = operation
        self.coeff = [float(c) for c in coeff]

    def extra_repr(self) -> str:
        return self.operation + (f", coeff={self.coeff}" if self.coeff else "")

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if self.operation == "PROD":
            y = xs[0]
            for x in xs[1:]:
                y = y * x
            return y
        if self.operation == "MAX":
            y = xs[0]
            for x in xs[1:]:
                y = torch.maximum(y, x)
            return y
        coeff = self.coeff or [1.0] * len(xs)
        y = xs[0] if coeff[0] == 1 else xs[0] * coeff[0]
        for x, c in zip(xs[1:], coeff[1:]):
            y = y + x if c == 1 else y + x * c
        return y


class Axpy(nn.Module):
    """The SENet fork's Axpy: ``a * X + Y``, a holding one factor per (image, channel)."""

    def forward(self, a: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        factor = a.reshape(x.shape[:2] + (1,) * (x.dim() - 2))
        return factor * x + y
