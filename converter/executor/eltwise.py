"""Eltwise in NumPy: SUM with coefficients, PROD, and MAX with Caffe's comparisons; Axpy."""

from __future__ import annotations

import numpy as np

from converter import caffe_pb2
from converter.executor.registry import executes


@executes("Eltwise")
def _eltwise(layer, bottoms, params, where):
    ep = layer.param.eltwise_param
    op = ep.operation
    if op == caffe_pb2.EltwiseParameter.SUM:
        coeffs = list(ep.coeff) or [1.0] * len(bottoms)
        y = coeffs[0] * bottoms[0]
        for coeff, x in zip(coeffs[1:], bottoms[1:]):
            y = y + coeff * x
        return [y]
    if op == caffe_pb2.EltwiseParameter.PROD:
        y = bottoms[0]
        for x in bottoms[1:]:
            y = y * x
        return [y]
    # MAX, with Caffe's comparisons: a > b ? a : b for the first pair, then a later
    # input replaces the running maximum only where it is greater.
    y = np.where(bottoms[0] > bottoms[1], bottoms[0], bottoms[1])
    for x in bottoms[2:]:
        y = np.where(x > y, x, y)
    return [y]


@executes("Axpy")
def _axpy(layer, bottoms, params, where):
    # The fork copies Y to the top, then adds a[n, c] * X[n, c] one (n, c) plane at a time.
    a, x, y = bottoms
    n, c = x.shape[:2]
    top = y.reshape(n * c, -1).copy()
    top += a.reshape(n * c, 1) * x.reshape(n * c, -1)
    return [top.reshape(x.shape)]
