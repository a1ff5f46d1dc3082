"""Eltwise in NumPy: SUM with coefficients, PROD, and MAX with Caffe's comparisons."""

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
