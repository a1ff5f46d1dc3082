"""Layers that route or reshape blobs, in NumPy: Concat, Slice, Split, Flatten, Reshape,
ShuffleChannel.

Every top is a copy: sharing memory as Caffe does only matters for in-place layers that
write a shared blob later, and the executor gives each blob its final value anyway.
"""

from __future__ import annotations

import numpy as np

from converter.executor.registry import executes
from converter.layers.registry import canonical_axis
from converter.layers.shape import (
    flatten_axes,
    permute_order,
    reshape_shape,
    shuffle_groups,
    slice_axis,
    slice_bounds,
    unsqueeze_axis,
)


@executes("Concat")
def _concat(layer, bottoms, params, where):
    cp = layer.param.concat_param
    axis_value = cp.concat_dim if cp.HasField("concat_dim") else cp.axis
    return [np.concatenate(bottoms, axis=canonical_axis(axis_value, bottoms[0].ndim, where))]


@executes("Slice")
def _slice(layer, bottoms, params, where):
    sp = layer.param.slice_param
    x = bottoms[0]
    axis = slice_axis(sp, x.ndim, where)
    bounds = slice_bounds(sp, x.shape[axis], len(layer.tops))
    lead = (slice(None),) * axis
    return [x[lead + (slice(start, end),)].copy() for start, end in bounds]


@executes("Flatten")
def _flatten(layer, bottoms, params, where):
    x = bottoms[0]
    start, end = flatten_axes(layer, x.ndim, where)
    return [x.reshape(x.shape[:start] + (-1,) + x.shape[end + 1 :]).copy()]


@executes("Split")
def _split(layer, bottoms, params, where):
    return [bottoms[0].copy() for _ in layer.tops]


@executes("Reshape")
def _reshape(layer, bottoms, params, where):
    x = bottoms[0]
    return [x.reshape(reshape_shape(layer.param.reshape_param, x.shape, where)).copy()]


@executes("ShuffleChannel")
def _shuffle_channel(layer, bottoms, params, where):
    x = bottoms[0]
    group = shuffle_groups(layer, x.shape, where)
    columns = x.shape[1] // group
    # Top channel j * group + i reads bottom channel i * columns + j.
    source = [i * columns + j for j in range(columns) for i in range(group)]
    return [x[:, source].copy()]


@executes("Permute")
def _permute(layer, bottoms, params, where):
    x = bottoms[0]
    return [np.transpose(x, permute_order(layer, x.ndim, where)).copy()]


@executes("Unsqueeze")
def _unsqueeze(layer, bottoms, params, where):
    x = bottoms[0]
    return [np.expand_dims(x, unsqueeze_axis(layer, x.ndim, where)).copy()]
