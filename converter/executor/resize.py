"""Resizing layers in NumPy: the DeepLab / PSPNet forks' Interp."""

from __future__ import annotations

import numpy as np

from converter.executor.registry import executes
from converter.layers.resize import interp_spec


@executes("Interp")
def _interp(layer, bottoms, params, where):
    x = bottoms[0]
    spec = interp_spec(layer, where)
    reference = bottoms[1].shape if len(bottoms) == 2 else None
    in_h, in_w, out_h, out_w = spec.output_size(*x.shape[2:], reference, where)
    begin = -spec.pad_beg
    x = x[:, :, begin : begin + in_h, begin : begin + in_w]
    if (in_h, in_w) == (out_h, out_w):
        return [x.copy()]
    # Rows, then columns: each output row blends two input rows, then each output column
    # two columns of that (Caffe blends the four corners at once; the same sum in exact
    # arithmetic).
    rows = _sources(in_h, out_h, spec.nearest)
    cols = _sources(in_w, out_w, spec.nearest)
    if spec.nearest:  # a copy of the nearest input value, no blend
        picked = np.take(x, [s[0] for s in rows], axis=2)
        return [np.take(picked, [s[0] for s in cols], axis=3)]
    blended = _blend(x, rows, axis=2)
    return [_blend(blended, cols, axis=3)]


def _sources(size_in: int, size_out: int, nearest: bool) -> list[tuple[int, int, float]]:
    """For each output position: (input index, next input index, weight of the next), by
    caffe_cpu_interp2's float32 arithmetic (caffe_cpu_nninterp2's for nearest)."""
    one = np.float32
    ratio = one(size_in - 1) / one(size_out - 1) if size_out > 1 else one(0)
    sources = []
    for i in range(size_out):
        position = ratio * one(i)
        if nearest:
            index = int(np.floor(float(position) + 0.5))
            sources.append((index, index, 0.0))
            continue
        index = int(position)
        step = 1 if index < size_in - 1 else 0
        sources.append((index, index + step, float(position - one(index))))
    return sources


def _blend(x: np.ndarray, sources, axis: int) -> np.ndarray:
    first = np.take(x, [s[0] for s in sources], axis=axis)
    second = np.take(x, [s[1] for s in sources], axis=axis)
    shape = [1] * x.ndim
    shape[axis] = len(sources)
    weight = np.array([s[2] for s in sources], dtype=x.dtype).reshape(shape)
    return (1 - weight) * first + weight * second
