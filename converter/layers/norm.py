"""BatchNorm, Scale, Bias, LRN and MVN: shape rules, modules and weights.

Caffe: ``src/caffe/layers/batch_norm_layer.cpp`` (blobs ``[mean * s, var * s, [s]]``),
``scale_layer.cpp``, ``bias_layer.cpp`` (``axis``/``num_axes``, or the operand as a second
bottom), ``lrn_layer.cpp``, ``mvn_layer.cpp``.
"""

from __future__ import annotations

import numpy as np

from converter.errors import ConverterError
from converter.layers.registry import (
    LayerShapes,
    Shape,
    canonical_axis,
    need_bottoms,
    register_layer,
    same_shape,
)

# ----------------------------------------------------------------------------- BatchNorm


def _batch_norm_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    need_bottoms(bottoms, 1, where)
    channels = bottoms[0][1] if len(bottoms[0]) > 1 else 1
    return LayerShapes([bottoms[0]], [(channels,), (channels,), (1,)])


def use_global_stats(layer) -> bool:
    """Whether a BatchNorm layer normalises with its stored statistics (the TEST default)."""
    bp = layer.param.batch_norm_param
    return bp.use_global_stats if bp.HasField("use_global_stats") else True


def _batch_norm_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.norm import BatchNorm

    if len(bottoms[0]) < 2:
        raise ConverterError(f"{where}: BatchNorm needs an input with a channel axis")
    return BatchNorm(bottoms[0][1], layer.param.batch_norm_param.eps, use_global_stats(layer))


def _batch_norm_weights(layer, blobs, module, where: str) -> dict[str, np.ndarray]:
    """Blobs 0 and 1 times Caffe's factor: 0 if the stored scale factor is 0, else 1 / it.

    Computed in float64, so a float64 model carries them exactly and a float32 one rounds
    them once.
    """
    stored = float(blobs[2].reshape(-1)[0]) if len(blobs) > 2 else 1.0
    factor = 0.0 if stored == 0 else 1.0 / stored  # Caffe's zero guard
    return {
        "running_mean": blobs[0].reshape(-1).astype(np.float64) * factor,
        "running_var": blobs[1].reshape(-1).astype(np.float64) * factor,
    }


register_layer(
    "BatchNorm",
    shape=_batch_norm_shapes,
    module=_batch_norm_module,
    weights=_batch_norm_weights,
    in_place=True,
)

# ----------------------------------------------------------------------------- Scale, Bias


def _operand_param(layer):
    return layer.param.scale_param if layer.type == "Scale" else layer.param.bias_param


def _scale_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    need_bottoms(bottoms, (1, 2), where)
    sp = _operand_param(layer)
    shape = bottoms[0]
    if len(bottoms) == 2:
        operand = bottoms[1]
    else:
        axis = canonical_axis(sp.axis, len(shape), where) if shape else 0
        num_axes = sp.num_axes
        if num_axes < -1:
            raise ConverterError(f"{where}: num_axes must be -1 or non-negative")
        end = len(shape) if num_axes == -1 else axis + num_axes
        if end > len(shape):
            raise ConverterError(f"{where}: axis {axis} + num_axes {num_axes} exceeds {shape}")
        operand = shape[axis:end]
    params = [] if len(bottoms) == 2 else [operand]
    if layer.type == "Scale" and sp.bias_term:
        params.append(operand)
    return LayerShapes([shape], params)


def _scale_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.norm import Bias, Scale

    shape = bottoms[0]
    sp = _operand_param(layer)
    axis = canonical_axis(sp.axis, len(shape), where) if shape else 0
    if len(bottoms) == 2:
        operand = bottoms[1]
    else:
        end = len(shape) if sp.num_axes == -1 else axis + sp.num_axes
        operand = shape[axis:end]
    if tuple(shape[axis : axis + len(operand)]) != tuple(operand):
        raise ConverterError(
            f"{where}: operand shape {operand} does not match input {shape} at axis {axis}"
        )
    if layer.type == "Bias":
        return Bias(axis, operand if len(bottoms) == 1 else None)
    return Scale(axis, operand, learned=len(bottoms) == 1, bias=sp.bias_term)


register_layer("Scale", shape=_scale_shapes, module=_scale_module, in_place=True)
register_layer("Bias", shape=_scale_shapes, module=_scale_module, in_place=True)

# ----------------------------------------------------------------------------- LRN


def _lrn_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.norm import LRN

    if len(bottoms[0]) != 4:
        raise ConverterError(f"{where}: LRN needs a 4-D input, found {bottoms[0]}")
    return LRN(layer.param.lrn_param, where)


register_layer("LRN", shape=same_shape, module=_lrn_module)

# ----------------------------------------------------------------------------- shape only

register_layer("MVN", shape=same_shape)
