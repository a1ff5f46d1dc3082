"""Convolution, Deconvolution and InnerProduct in NumPy: im2col + GEMM as Caffe does it."""

from __future__ import annotations

import itertools
import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from converter.executor.common import broadcast
from converter.executor.registry import executes
from converter.executor.shape import indices
from converter.layers.conv import conv_channels, conv_geometry
from converter.layers.registry import canonical_axis


@executes("Convolution")  # and its aliases (DepthwiseConvolution, ConvolutionDepthwise)
def _convolution(layer, bottoms, params, where):
    return [_conv(x, params, _conv_param(layer, x, where), where) for x in bottoms]


def _conv_param(layer, x: np.ndarray, where: str):
    """The layer's ConvolutionParameter with the group it computes with (conv_channels)."""
    cp = layer.param.convolution_param
    axis = canonical_axis(cp.axis, x.ndim, where)
    group = conv_channels(layer, x.shape[axis])[1]
    if group == cp.group:
        return cp
    computed = type(cp)()
    computed.CopyFrom(cp)
    computed.group = group
    return computed


def _conv(x: np.ndarray, params, cp, where: str) -> np.ndarray:
    """Caffe's im2col + GEMM, as sliding windows + one (batched) matmul per group."""
    axis = canonical_axis(cp.axis, x.ndim, where)
    lead, channels, in_size = x.shape[:axis], x.shape[axis], x.shape[axis + 1 :]
    spatial = len(in_size)
    kernel, stride, pad, dilation = conv_geometry(cp, spatial, where)
    weight = params[0]
    group, n_out = cp.group, weight.shape[0]
    x = x.reshape((-1, channels) + in_size)
    n = x.shape[0]
    every = (slice(None), slice(None))
    if all(k == 1 for k in kernel) and not any(pad):
        strided = x[every + tuple(slice(None, None, s) for s in stride)]
        out_size = strided.shape[2:]
        cols = strided.reshape(n, group, channels // group, -1)
    else:
        padded = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in pad])
        extent = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
        windows = sliding_window_view(padded, extent, axis=tuple(range(2, 2 + spatial)))
        windows = windows[
            every
            + tuple(slice(None, None, s) for s in stride)
            + tuple(slice(None, None, d) for d in dilation)
        ]  # (N, C, out..., kernel...)
        out_size = windows.shape[2 : 2 + spatial]
        order = (0, 1, *range(2 + spatial, 2 + 2 * spatial), *range(2, 2 + spatial))
        cols = windows.transpose(order).reshape(n, group, -1, math.prod(out_size))
    out = np.matmul(weight.reshape(group, n_out // group, -1), cols)  # (N, G, out/G, P)
    out = out.reshape((n, n_out) + out_size)
    if cp.bias_term:
        out += broadcast(params[1], out.ndim, 1)
    return out.reshape(lead + (n_out,) + out_size)


@executes("Deconvolution")
def _deconvolution(layer, bottoms, params, where):
    cp = layer.param.convolution_param
    return [_deconv(x, params, cp, where) for x in bottoms]


def _deconv(x: np.ndarray, params, cp, where: str) -> np.ndarray:
    """Caffe's deconvolution: GEMM with the transposed weight, then col2im (scatter-add)."""
    axis = canonical_axis(cp.axis, x.ndim, where)
    lead, channels, in_size = x.shape[:axis], x.shape[axis], x.shape[axis + 1 :]
    spatial = len(in_size)
    kernel, stride, pad, dilation = conv_geometry(cp, spatial, where)
    weight = params[0]  # (C_in, C_out / group, kernel...)
    group, n_out = cp.group, weight.shape[1] * cp.group
    x = x.reshape(-1, group, channels // group, math.prod(in_size))
    n = x.shape[0]
    w = weight.reshape(group, channels // group, -1).transpose(0, 2, 1)
    cols = np.matmul(w, x).reshape((n, n_out, *kernel) + in_size)
    full = [s * (i - 1) + d * (k - 1) + 1 for s, i, d, k in zip(stride, in_size, dilation, kernel)]
    canvas = np.zeros((n, n_out, *full), dtype=x.dtype)
    every = (slice(None), slice(None))
    for offset in itertools.product(*(range(k) for k in kernel)):
        target = tuple(
            slice(o * d, o * d + s * (i - 1) + 1, s)
            for o, d, s, i in zip(offset, dilation, stride, in_size)
        )
        canvas[every + target] += cols[every + offset]
    out = canvas[every + tuple(slice(p, f - p) for p, f in zip(pad, full))]
    if cp.bias_term:
        out = out + broadcast(params[1], out.ndim, 1)
    return out.reshape(lead + out.shape[1:])


@executes("InnerProduct")
def _inner_product(layer, bottoms, params, where):
    ip = layer.param.inner_product_param
    x = bottoms[0]
    axis = canonical_axis(ip.axis, x.ndim, where)
    flat = x.reshape(math.prod(x.shape[:axis]), -1)
    weight = params[0]
    y = flat @ (weight if ip.transpose else weight.T)
    if ip.bias_term:
        y = y + params[1]
    return [y.reshape(x.shape[:axis] + (y.shape[1],))]


@executes("Embed")
def _embed(layer, bottoms, params, where):
    weight = params[0]
    rows = weight[indices(bottoms[0], weight.shape[0], "index", where)]
    if layer.param.embed_param.bias_term:
        rows = rows + params[1]
    return [rows]
