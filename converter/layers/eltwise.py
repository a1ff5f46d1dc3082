"""Eltwise: SUM (with coefficients), PROD or MAX of same-shaped bottoms; Axpy.

Caffe: ``src/caffe/layers/eltwise_layer.cpp``. Axpy is the SENet fork's
(hujie-frank/SENet ``src/caffe/layers/axpy_layer.cpp``).
"""

from __future__ import annotations

import math

from converter import caffe_pb2
from converter.codegen.common import number
from converter.errors import ConverterError
from converter.layers.registry import LayerCode, LayerShapes, Shape, need_bottoms, register_layer

# ----------------------------------------------------------------------------- Eltwise


def _eltwise_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    need_bottoms(bottoms, (2, 1 << 30), where)
    if any(b != bottoms[0] for b in bottoms):
        raise ConverterError(f"{where}: inputs differ in shape: {bottoms}")
    coeff = layer.param.eltwise_param.coeff
    if coeff and len(coeff) != len(bottoms):
        raise ConverterError(f"{where}: {len(coeff)} coeffs for {len(bottoms)} inputs")
    return LayerShapes([bottoms[0]], [])


def _eltwise_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.eltwise import Eltwise

    ep = layer.param.eltwise_param
    return Eltwise(caffe_pb2.EltwiseParameter.EltwiseOp.Name(ep.operation), ep.coeff)


def _eltwise_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    """The same operations, in the same order, as the Eltwise module."""
    ep = layer.param.eltwise_param
    names = [f"{{{i}}}" for i in range(len(bottoms))]
    if ep.operation == caffe_pb2.EltwiseParameter.PROD:
        return LayerCode(" * ".join(names))
    if ep.operation == caffe_pb2.EltwiseParameter.MAX:
        expr = names[0]
        for name in names[1:]:
            expr = f"torch.maximum({expr}, {name})"
        return LayerCode(expr)
    coeff = list(ep.coeff) or [1.0] * len(names)
    terms = [name if c == 1 else f"{name} * {number(c)}" for name, c in zip(names, coeff)]
    return LayerCode(" + ".join(terms))


register_layer("Eltwise", shape=_eltwise_shapes, module=_eltwise_module, code=_eltwise_code)

# ----------------------------------------------------------------------------- Axpy


def _axpy_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    """``F = a * X + Y`` (bottoms a, X, Y): a holds one factor per (image, channel) of X.

    The fork's Reshape checks a's first two axes against X's, a 4-D a to be (N, C, 1, 1),
    and X and Y to have one shape; its Forward reads a as N * C numbers and X through the
    legacy num/channels accessors (at most 4 axes). A longer a is refused here rather than
    read in part, as the fork would.
    """
    need_bottoms(bottoms, 3, where)
    a, x, y = bottoms
    if not 2 <= len(x) <= 4:
        raise ConverterError(f"{where}: X (bottom 1) must have 2 to 4 axes, found {x}")
    if x != y:
        raise ConverterError(f"{where}: X {x} and Y {y} (bottoms 1 and 2) differ in shape")
    if len(a) < 2 or a[:2] != x[:2] or math.prod(a[2:]) != 1:
        raise ConverterError(
            f"{where}: the factor a (bottom 0) must be (N, C) or (N, C, 1, 1) for X of shape "
            f"{x}, found {a}"
        )
    return LayerShapes([x], [])


def _axpy_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.eltwise import Axpy

    return Axpy()


def _axpy_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    """a viewed as (N, C, 1, ...) against X, times X, plus Y."""
    ones = ", 1" * (len(bottoms[1]) - 2)
    return LayerCode(f"{{0}}.reshape({{1}}.shape[0], {{1}}.shape[1]{ones}) * {{1}} + {{2}}")


register_layer("Axpy", shape=_axpy_shapes, module=_axpy_module, code=_axpy_code)
