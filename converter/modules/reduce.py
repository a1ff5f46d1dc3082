"""ArgMax and Reduction as modules."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ArgMax(nn.Module):
    """Caffe's ArgMax: the ``top_k`` largest values along ``axis`` (or over each flattened
    sample when ``axis`` is None), largest first, ties broken towards the larger index as
    ``std::partial_sort`` with ``std::greater`` on (value, index) does. The top holds the
    indices (as numbers of the input's dtype), or with ``out_max_val`` the values; without an
    axis and with ``out_max_val``, both: ``[:, 0]`` indices, ``[:, 1]`` values.

    No sort: ``top_k`` rounds of "the largest value not taken yet, at its largest index"
    (``top_k_last``), which torch.export and ONNX translate exactly (ONNX has no stable
    sort, and its TopK breaks ties the other way)."""

    def __init__(self, axis: int | None, top_k: int, out_max_val: bool, top_tail: Sequence[int]):
        super().__init__()
        self.axis, self.top_k, self.out_max_val = axis, top_k, out_max_val
        self.top_tail = tuple(top_tail)  # the top's shape after the batch axis (no axis)

    def extra_repr(self) -> str:
        return f"axis={self.axis}, top_k={self.top_k}, out_max_val={self.out_max_val}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        axis = 1 if self.axis is None else self.axis
        values = x.flatten(1) if self.axis is None else x
        ordered, indices = top_k_last(values, self.top_k, axis)
        indices = indices.to(x.dtype)
        if self.axis is not None:
            return ordered if self.out_max_val else indices
        if self.out_max_val:
            return torch.stack([indices, ordered], dim=1).reshape(x.shape[0], *self.top_tail)
        return indices.reshape(x.shape[0], *self.top_tail)


def top_k_last(values: torch.Tensor, k: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest of ``values`` along ``dim``, largest first, and their indices
    (int64); among equal values the larger index comes first."""
    shape = [1] * values.dim()
    shape[dim] = values.shape[dim]
    position = torch.arange(values.shape[dim], device=values.device).reshape(shape)
    taken = torch.zeros_like(values, dtype=torch.bool)
    best, where = [], []
    for _ in range(k):
        remaining = values.masked_fill(taken, float("-inf"))
        top = remaining.amax(dim, keepdim=True)
        ties = (remaining == top) & ~taken
        index = torch.where(ties, position, -1).amax(dim, keepdim=True)
        taken = taken | (position == index)
        best.append(top)
        where.append(index)
    return torch.cat(best, dim), torch.cat(where, dim)


class Reduction(nn.Module):
    """Caffe's Reduction: ``coeff * op`` over every axis from ``axis``; op SUM, ASUM (sum of
    absolute values), SUMSQ (sum of squares) or MEAN."""

    def __init__(self, axis: int, operation: str, coeff: float):
        super().__init__()
        self.axis, self.operation, self.coeff = axis, operation, coeff

    def extra_repr(self) -> str:
        return f"axis={self.axis}, operation={self.operation}, coeff={self.coeff}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(*x.shape[: self.axis], -1)
        if self.operation == "ASUM":
            flat = flat.abs()
        elif self.operation == "SUMSQ":
            flat = flat.square()
        y = flat.mean(dim=-1) if self.operation == "MEAN" else flat.sum(dim=-1)
        return y if self.coeff == 1 else y * self.coeff
