"""Modules that route, reshape or pick blobs: Input, Concat, Slice, Split, Flatten, Reshape,
ShuffleChannel, Crop, Tile, Silence, Parameter, BatchReindex."""

from __future__ import annotations

import torch
from torch import nn

from converter import caffe_pb2
from converter.layers.shape import reshape_shape, slice_bounds


class CaffeInput(nn.Module):
    """An Input layer: passes the net's input tensors through as its tops."""

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return inputs


class Concat(nn.Module):
    def __init__(self, axis: int):
        super().__init__()
        self.axis = axis

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=self.axis)


class Slice(nn.Module):
    """Caffe's Slice: ``slice_point`` boundaries along ``axis``, or equal parts."""

    def __init__(self, param: caffe_pb2.SliceParameter, axis: int, n_tops: int):
        super().__init__()
        self.param_bytes = param.SerializeToString()  # protobuf messages do not pickle
        self.axis = axis
        self.n_tops = n_tops

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        param = caffe_pb2.SliceParameter.FromString(self.param_bytes)
        bounds = slice_bounds(param, x.shape[self.axis], self.n_tops)
        return tuple(x.narrow(self.axis, a, b - a) for a, b in bounds)


class Split(nn.Module):
    def __init__(self, n_tops: int):
        super().__init__()
        self.n_tops = n_tops

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (x,) * self.n_tops


class Flatten(nn.Module):
    """Caffe's Flatten: merge axes ``axis..end_axis`` (inclusive) into one."""

    def __init__(self, axis: int, end_axis: int):
        super().__init__()
        self.axis, self.end_axis = axis, end_axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(self.axis, self.end_axis)


class Reshape(nn.Module):
    """Caffe's Reshape (``0`` copies an input axis, ``-1`` is inferred), shape from the input."""

    def __init__(self, param: caffe_pb2.ReshapeParameter, where: str):
        super().__init__()
        self.param_bytes = param.SerializeToString()  # protobuf messages do not pickle
        self.where = where

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        param = caffe_pb2.ReshapeParameter.FromString(self.param_bytes)
        return x.reshape(reshape_shape(param, tuple(x.shape), self.where))


class ShuffleChannel(nn.Module):
    """ShuffleNet's channel shuffle: channels seen as a (group, C / group) grid, transposed."""

    def __init__(self, group: int):
        super().__init__()
        self.group = group

    def extra_repr(self) -> str:
        return f"group={self.group}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        grid = x.reshape((n, self.group, c // self.group) + tuple(x.shape[2:]))
        return grid.transpose(1, 2).reshape(x.shape)


class Permute(nn.Module):
    """SSD's Permute: the axes in ``order`` (complete: every axis once)."""

    def __init__(self, order: tuple[int, ...]):
        super().__init__()
        self.order = tuple(order)

    def extra_repr(self) -> str:
        return f"order={self.order}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(self.order)


class Unsqueeze(nn.Module):
    def __init__(self, axis: int):
        super().__init__()
        self.axis = axis

    def extra_repr(self) -> str:
        return f"axis={self.axis}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(self.axis)


class Crop(nn.Module):
    """Caffe's Crop: axes from ``axis`` on take the reference's size, from ``offsets``."""

    def __init__(self, axis: int, offsets: list[int]):
        super().__init__()
        self.axis, self.offsets = axis, list(offsets)

    def extra_repr(self) -> str:
        return f"axis={self.axis}, offsets={self.offsets}"

    def forward(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        for i, offset in enumerate(self.offsets):
            axis = self.axis + i
            x = x.narrow(axis, offset, reference.shape[axis])
        return x


class Tile(nn.Module):
    """Caffe's Tile: the block ``x[..., axis:]`` repeated ``tiles`` times along ``axis``."""

    def __init__(self, axis: int, tiles: int):
        super().__init__()
        self.axis, self.tiles = axis, tiles

    def extra_repr(self) -> str:
        return f"axis={self.axis}, tiles={self.tiles}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        repeats = [1] * x.dim()
        repeats[self.axis] = self.tiles
        return x.repeat(repeats)


class Silence(nn.Module):
    """Caffe's Silence: consumes its bottoms, produces nothing."""

    def forward(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return ()


class Parameter(nn.Module):
    """Caffe's Parameter layer: its top is its learned blob, ``weight``."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(shape))

    def forward(self) -> torch.Tensor:
        return self.weight.clone()  # a blob, not the Parameter itself (gradients still flow)


class BatchReindex(nn.Module):
    """Caffe's BatchReindex: ``x[indices]`` along axis 0, indices given as numbers."""

    def forward(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return x.index_select(0, indices.long())
