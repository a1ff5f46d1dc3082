"""Eltwise: SUM (with coefficients), PROD or MAX of same-shaped bottoms.

Caffe: ``src/caffe/layers/eltwise_layer.cpp``.
"""

from __future__ import annotations

from converter import caffe_pb2
from converter.errors import ConverterError
from converter.layers.registry import LayerShapes, Shape, need_bottoms, register_layer


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


register_layer("Eltwise", shape=_eltwise_shapes, module=_eltwise_module)
