"""ArgMax and Reduction in NumPy."""

from __future__ import annotations

import numpy as np

from converter import caffe_pb2
from converter.executor.registry import executes
from converter.layers.reduce import argmax_axis
from converter.layers.registry import canonical_axis

_OPS = caffe_pb2.ReductionParameter


@executes("ArgMax")
def _argmax(layer, bottoms, params, where):
    """Sort (value desc, index desc) along the searched axis, keep the first ``top_k``."""
    ap = layer.param.argmax_param
    x = bottoms[0]
    axis = argmax_axis(layer, x.shape, where)
    values = np.moveaxis(x, axis, -1) if axis is not None else x.reshape(x.shape[0], -1)
    index = np.broadcast_to(np.arange(values.shape[-1]), values.shape)
    order = np.lexsort((-index, -values), axis=-1)[..., : ap.top_k]
    best = np.take_along_axis(values, order, axis=-1)
    if axis is not None:
        return [np.moveaxis(best if ap.out_max_val else order.astype(x.dtype), -1, axis)]
    parts = [order.astype(x.dtype)] + ([best] if ap.out_max_val else [])
    top = np.stack(parts, axis=1)  # (N, 1 or 2, top_k)
    return [top.reshape(top.shape + (1,) * (x.ndim - 3))]


@executes("Reduction")
def _reduction(layer, bottoms, params, where):
    rp = layer.param.reduction_param
    x = bottoms[0]
    axes = tuple(range(canonical_axis(rp.axis, x.ndim, where), x.ndim))
    terms = {_OPS.SUM: x, _OPS.MEAN: x, _OPS.ASUM: np.abs(x), _OPS.SUMSQ: x * x}[rp.operation]
    total = np.sum(terms, axis=axes)
    if rp.operation == _OPS.MEAN:
        total = total / np.prod([x.shape[a] for a in axes])
    return [np.asarray(rp.coeff * total)]
