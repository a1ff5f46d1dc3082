"""ArgMax and Reduction: shape rules, modules and code.

Caffe: ``src/caffe/layers/argmax_layer.cpp``, ``reduction_layer.cpp``.
"""

from __future__ import annotations

import math

from converter import caffe_pb2
from converter.codegen.common import number
from converter.errors import ConverterError
from converter.layers.registry import (
    ExactPart,
    LayerCode,
    LayerShapes,
    Shape,
    canonical_axis,
    need_bottoms,
    register_layer,
)

# ----------------------------------------------------------------------------- ArgMax


def argmax_axis(layer, shape: Shape, where: str) -> int | None:
    """The axis an ArgMax layer searches, None for "each sample flattened"; checks top_k as
    ``ArgMaxLayer::LayerSetUp`` does."""
    ap = layer.param.argmax_param
    if ap.top_k < 1:
        raise ConverterError(f"{where}: top_k must be at least 1, found {ap.top_k}")
    if ap.HasField("axis"):
        axis = canonical_axis(ap.axis, len(shape), where)
        size = shape[axis]
    else:
        axis, size = None, math.prod(shape[1:])
    if ap.top_k > size:
        raise ConverterError(f"{where}: top_k {ap.top_k} exceeds the {size} values searched")
    return axis


def _argmax_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    """With an axis: the bottom's shape with ``top_k`` on that axis. Without: (N, 1, top_k),
    or (N, 2, top_k) with ``out_max_val`` (indices, then values), padded with 1s to the
    bottom's number of axes (at least 3)."""
    need_bottoms(bottoms, 1, where)
    shape = bottoms[0]
    ap = layer.param.argmax_param
    axis = argmax_axis(layer, shape, where)
    if axis is not None:
        return LayerShapes([shape[:axis] + (ap.top_k,) + shape[axis + 1 :]], [])
    top = [1] * max(3, len(shape))
    top[0], top[1], top[2] = shape[0], 2 if ap.out_max_val else 1, ap.top_k
    return LayerShapes([tuple(top)], [])


def _argmax_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.reduce import ArgMax

    ap = layer.param.argmax_param
    top = _argmax_shapes(layer, bottoms, where).top_shapes[0]
    return ArgMax(argmax_axis(layer, bottoms[0], where), ap.top_k, ap.out_max_val, top[1:])


def _argmax_exact(layer) -> dict[int, ExactPart]:
    """The indices: the whole top, or with ``out_max_val`` and no axis its first channel
    (the second holds the values); with an axis and ``out_max_val`` the top is values."""
    ap = layer.param.argmax_param
    if not ap.out_max_val:
        return {0: ExactPart("indices")}
    return {} if ap.HasField("axis") else {0: ExactPart("indices", axis=1, index=(0,))}


_TOP_K = '''
def top_k_last(values: torch.Tensor, k: int, dim: int):
    """The ``k`` largest of ``values`` along ``dim``, largest first, and their indices;
    among equal values the larger index comes first, as in Caffe's ArgMax. No sort:
    ``k`` rounds of "the largest value not taken yet, at its largest index", which
    exports to ONNX exactly (ONNX's TopK breaks ties towards the smaller index)."""
    shape = [1] * values.dim()
    shape[dim] = values.shape[dim]
    position = torch.arange(values.shape[dim], device=values.device).reshape(shape)
    taken = torch.zeros_like(values, dtype=torch.bool)
    best, where = [], []
    for _ in range(k):
        remaining = values.masked_fill(taken, float("-inf"))
        top = remaining.amax(dim, keepdim=True)
        ties = (remaining == top) & ~taken
        index = torch.where(ties, position, -1).amax(dim, keepdim=True)
        taken = taken | (position == index)
        best.append(top)
        where.append(index)
    return torch.cat(best, dim), torch.cat(where, dim)
'''


_ARGMAX = '''
def caffe_argmax(x: torch.Tensor, top_k: int, axis: int | None, out_max_val: bool):
    """Caffe's ArgMax: with an axis, the ``top_k`` largest values along it, or their
    indices; without, each sample flattened and the top (N, 1, top_k) of indices, or
    (N, 2, top_k) of indices then values, padded with 1s to the input's axes."""
    dim = 1 if axis is None else axis
    values, index = top_k_last(x.flatten(1) if axis is None else x, top_k, dim)
    index = index.to(x.dtype)
    if axis is not None:
        return values if out_max_val else index
    top = torch.stack([index, values], 1) if out_max_val else index[:, None]
    return top.reshape(*top.shape, *[1] * (x.dim() - 3))
'''


def _argmax_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    ap = layer.param.argmax_param
    axis = argmax_axis(layer, bottoms[0], where)
    call = f"caffe_argmax({{0}}, {ap.top_k}, {axis}, {ap.out_max_val})"
    return LayerCode(call, helpers=(_TOP_K, _ARGMAX))


register_layer(
    "ArgMax",
    shape=_argmax_shapes,
    module=_argmax_module,
    exact=_argmax_exact,
    code=_argmax_code,
)

# ----------------------------------------------------------------------------- Reduction


def _reduction_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    need_bottoms(bottoms, 1, where)
    axis = canonical_axis(layer.param.reduction_param.axis, len(bottoms[0]), where)
    return LayerShapes([bottoms[0][:axis]], [])  # axis 0: a 0-d blob


def _reduction_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.reduce import Reduction

    rp = layer.param.reduction_param
    axis = canonical_axis(rp.axis, len(bottoms[0]), where)
    operation = caffe_pb2.ReductionParameter.ReductionOp.Name(rp.operation)
    return Reduction(axis, operation, rp.coeff)


def _reduction_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    """The axes from ``axis`` flattened into one and reduced: ``coeff * op``."""
    rp = layer.param.reduction_param
    axis = canonical_axis(rp.axis, len(bottoms[0]), where)
    ops = caffe_pb2.ReductionParameter
    flat = "{0}" if axis == len(bottoms[0]) - 1 else f"{{0}}.flatten({axis})"
    term = {ops.ASUM: ".abs()", ops.SUMSQ: ".square()"}.get(rp.operation, "")
    total = ".mean(dim=-1)" if rp.operation == ops.MEAN else ".sum(dim=-1)"
    expr = flat + term + total
    return LayerCode(expr if rp.coeff == 1 else f"{expr} * {number(rp.coeff)}")


register_layer("Reduction", shape=_reduction_shapes, module=_reduction_module, code=_reduction_code)
