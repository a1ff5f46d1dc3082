"""BatchNorm, Scale, Bias, LRN and Softmax in NumPy; the forks' BN and SSD's Normalize."""

from __future__ import annotations

import numpy as np

from converter import caffe_pb2
from converter.errors import ConverterError
from converter.executor.common import broadcast
from converter.executor.pool import pool
from converter.executor.registry import executes
from converter.layers.norm import bn_variant, use_global_stats
from converter.layers.registry import canonical_axis


@executes("BatchNorm")
def _batch_norm(layer, bottoms, params, where):
    x = bottoms[0]
    channels = x.shape[1] if x.ndim > 1 else 1
    x3 = x.reshape(x.shape[0], channels, -1)
    if use_global_stats(layer):
        stored = params[2].reshape(-1)[0]
        factor = 0.0 if stored == 0 else 1.0 / stored
        mean, var = params[0] * factor, params[1] * factor
    else:
        mean = x3.mean(axis=(0, 2))
        var = np.square(x3 - mean[:, None]).mean(axis=(0, 2))  # biased, as Caffe
    eps = layer.param.batch_norm_param.eps
    y = (x3 - mean[:, None]) / np.sqrt(var + eps)[:, None]
    return [y.reshape(x.shape)]


def _operand_axis(sp, x: np.ndarray, operand: np.ndarray, where: str) -> int:
    """Where a Scale/Bias operand lines up with ``x``; a 0-D operand is a plain scalar."""
    axis = 0 if operand.ndim == 0 else canonical_axis(sp.axis, x.ndim, where)
    if x.shape[axis : axis + operand.ndim] != operand.shape:
        raise ConverterError(
            f"{where}: operand of shape {operand.shape} does not match axes "
            f"{axis}..{axis + operand.ndim - 1} of the input {x.shape}"
        )
    return axis


@executes("Scale")
def _scale(layer, bottoms, params, where):
    sp = layer.param.scale_param
    x = bottoms[0]
    scale = bottoms[1] if len(bottoms) == 2 else params[0]
    axis = _operand_axis(sp, x, scale, where)
    y = x * broadcast(scale, x.ndim, axis)
    if sp.bias_term:
        y = y + broadcast(params[-1], x.ndim, axis)
    return [y]


@executes("Bias")
def _bias(layer, bottoms, params, where):
    x = bottoms[0]
    bias = bottoms[1] if len(bottoms) == 2 else params[0]
    axis = _operand_axis(layer.param.bias_param, x, bias, where)
    return [x + broadcast(bias, x.ndim, axis)]


@executes("LRN")
def _lrn(layer, bottoms, params, where):
    lp = layer.param.lrn_param
    x = bottoms[0]
    size = lp.local_size  # odd, on a 4-D input: the shape rule checked
    half = (size - 1) // 2
    square = np.square(x)
    if lp.norm_region == caffe_pb2.LRNParameter.ACROSS_CHANNELS:
        # Sum of squares over channels [c - half, c + half], clipped to the blob.
        padded = np.pad(square, [(0, 0), (half, half), (0, 0), (0, 0)])
        cumulative = np.cumsum(padded, axis=1)
        cumulative = np.concatenate([np.zeros_like(cumulative[:, :1]), cumulative], axis=1)
        window_sum = cumulative[:, size:] - cumulative[:, :-size]
        scale = lp.k + lp.alpha / size * window_sum
    else:
        # Caffe builds this from layers: AVE pooling (pad half) of x^2, then Power(1, alpha).
        window = caffe_pb2.PoolingParameter(
            pool=caffe_pb2.PoolingParameter.AVE, kernel_size=size, pad=half
        )
        scale = 1.0 + lp.alpha * pool(square, window, where)
    return [x * np.power(scale, -lp.beta)]


@executes("Softmax")
def _softmax(layer, bottoms, params, where):
    x = bottoms[0]
    axis = canonical_axis(layer.param.softmax_param.axis, x.ndim, where)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return [e / e.sum(axis=axis, keepdims=True)]


@executes("BN")
def _bn(layer, bottoms, params, where):
    x = bottoms[0]
    variant = bn_variant(layer, where)
    if variant is None:
        raise ConverterError(f"{where}: BN has no blobs: its caffemodel must hold 2 or 4")
    axis = variant.axis
    # Channels first, everything else flattened behind them.
    moved = np.moveaxis(x, axis, 0)
    flat = moved.reshape(moved.shape[0], -1)
    scale, shift = (p.reshape(-1, 1) for p in params[:2])
    if variant.statistics == "none":
        y = flat * scale + shift
    else:
        if variant.statistics == "stored":
            mean, var = (p.reshape(-1, 1) for p in params[2:4])
        else:
            mean = flat.mean(axis=1, keepdims=True)
            var = np.mean((flat - mean) ** 2, axis=1, keepdims=True)
        y = (flat - mean) * (1.0 / np.sqrt(var + variant.eps)) * scale + shift
    return [np.moveaxis(y.reshape(moved.shape), 0, axis)]


@executes("Normalize")
def _normalize(layer, bottoms, params, where):
    x, np_ = bottoms[0], layer.param.norm_param
    flat = x.reshape(x.shape[0], x.shape[1], -1)  # (N, C, positions)
    if np_.across_spatial:
        sums = np.square(flat).sum(axis=(1, 2), keepdims=True)  # per sample
    else:
        sums = np.square(flat).sum(axis=1, keepdims=True)  # per sample and position
    y = flat / np.sqrt(sums + np_.eps)
    scale = params[0].reshape(()) if params[0].ndim == 0 else params[0][None, :, None]
    return [(y * scale).reshape(x.shape)]


@executes("MVN")
def _mvn(layer, bottoms, params, where):
    mp = layer.param.mvn_param
    x = bottoms[0]
    rows = x.reshape(x.shape[0] if mp.across_channels else x.shape[0] * x.shape[1], -1)
    y = rows - rows.mean(axis=1, keepdims=True)
    if mp.normalize_variance:
        y = y / (rows.std(axis=1, keepdims=True) + mp.eps)  # eps on the deviation, as Caffe
    return [y.reshape(x.shape)]
