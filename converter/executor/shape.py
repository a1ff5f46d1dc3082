"""Layers that route, reshape or pick blobs, in NumPy: Concat, Slice, Split, Flatten,
Reshape, ShuffleChannel, Crop, Tile, Silence, Parameter, BatchReindex.

Every top is a copy. Where Caffe's tops share their bottom's memory (Flatten, Reshape,
Split), an in-place layer writing one of them later writes them all: the driver
(``converter.executor.run``) copies that write to the whole group.
"""

from __future__ import annotations

import numpy as np

from converter.errors import ConverterError
from converter.executor.registry import executes
from converter.layers.registry import canonical_axis
from converter.layers.shape import (
    crop_offsets,
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


@executes("Crop")
def _crop(layer, bottoms, params, where):
    x, reference = bottoms
    offsets = crop_offsets(layer, [x.shape, reference.shape], where)
    start = canonical_axis(layer.param.crop_param.axis, x.ndim, where)
    window = tuple(
        slice(offsets[axis], offsets[axis] + reference.shape[axis])
        if axis >= start
        else slice(None)
        for axis in range(x.ndim)
    )
    return [x[window].copy()]


@executes("Tile")
def _tile(layer, bottoms, params, where):
    x, tp = bottoms[0], layer.param.tile_param
    return [np.concatenate([x] * tp.tiles, axis=canonical_axis(tp.axis, x.ndim, where))]


@executes("Silence")
def _silence(layer, bottoms, params, where):
    return []


@executes("Parameter")
def _parameter(layer, bottoms, params, where):
    return [params[0].copy()]


def indices(values: np.ndarray, size: int, what: str, where: str) -> np.ndarray:
    """Numbers used as indices into ``size`` rows, truncated as ``static_cast<int>``; a value
    outside [0, size) raises ConverterError (Caffe's behaviour there is undefined)."""
    index = np.trunc(values).astype(np.int64)
    bad = (index < 0) | (index >= size) | ~np.isfinite(values)
    if bad.any():
        raise ConverterError(f"{where}: {what} {values[bad].reshape(-1)[0]} is outside [0, {size})")
    return index


@executes("BatchReindex")
def _batch_reindex(layer, bottoms, params, where):
    x, order = bottoms
    return [x[indices(order, x.shape[0], "index", where)]]
