"""Modules of the convolution family that ``torch.nn`` lacks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class InnerProduct(nn.Module):
    """Caffe's InnerProduct: flatten every axis from ``axis``, then ``x W^T + b``."""

    def __init__(self, axis: int, weight_shape: Sequence[int], bias: bool, transpose: bool):
        super().__init__()
        self.axis = axis
        self.transpose = transpose
        self.weight = nn.Parameter(torch.zeros(tuple(weight_shape)))
        n_out = weight_shape[1] if transpose else weight_shape[0]
        self.bias = nn.Parameter(torch.zeros(n_out)) if bias else None

    def extra_repr(self) -> str:
        return f"axis={self.axis}, weight={tuple(self.weight.shape)}, transpose={self.transpose}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.t() if self.transpose else self.weight
        return F.linear(x.flatten(self.axis), weight, self.bias)


class Embed(nn.Module):
    """Caffe's Embed: row ``int(x)`` of ``weight`` (input_dim, num_output), plus ``bias``;
    the input holds indices as numbers (truncated towards zero, as ``static_cast<int>``)."""

    def __init__(self, input_dim: int, num_output: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(input_dim, num_output))
        self.bias = nn.Parameter(torch.zeros(num_output)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.embedding(x.long(), self.weight)
        return y if self.bias is None else y + self.bias
