"""MAX / AVE pooling in NumPy with Caffe's windows, divisor and empty ceil-mode windows."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from converter import caffe_pb2
from converter.errors import ConverterError
from converter.executor.registry import executes
from converter.layers.pool import pool_geometry, pooling_mask, spp_levels

FLT_MAX = float(np.finfo(np.float32).max)  # Caffe's start value for MAX pooling


@executes("Pooling")
def _pooling(layer, bottoms, params, where):
    pp = layer.param.pooling_param
    pooled = pool(bottoms[0], pp, where)
    if not pooling_mask(layer, where):
        return [pooled]
    return [pooled, max_positions(bottoms[0], pp, where)]


def max_positions(x: np.ndarray, pp, where: str) -> np.ndarray:
    """Caffe's MAX pooling mask: per output, ``h * W + w`` of the first input value (row-major
    in the window clipped to the image) strictly above every earlier one and -FLT_MAX; -1
    where there is none (``pooling_layer.cpp``, ``top_mask``)."""
    n, c, height, width = x.shape
    g = pool_geometry(pp, height, width, where)
    mask = np.full((n, c, *g.output), -1.0, dtype=x.dtype)
    for i in range(g.output[0]):
        start = i * g.stride[0] - g.pad[0]
        h0, h1 = max(start, 0), min(start + g.kernel[0], height)
        for j in range(g.output[1]):
            start = j * g.stride[1] - g.pad[1]
            w0, w1 = max(start, 0), min(start + g.kernel[1], width)
            if h0 >= h1 or w0 >= w1:
                continue  # an empty window: the mask keeps -1
            window = x[:, :, h0:h1, w0:w1].reshape(n, c, -1)
            # NaN never compares greater in Caffe: it can neither win nor displace a winner
            window = np.where(np.isnan(window), -np.inf, window)
            first = window.argmax(axis=-1)  # the first maximum, in row-major order
            best = np.take_along_axis(window, first[..., None], axis=-1)[..., 0]
            index = (h0 + first // (w1 - w0)) * width + w0 + first % (w1 - w0)
            mask[:, :, i, j] = np.where(best > -FLT_MAX, index, -1)
    return mask


def pool(x: np.ndarray, pp, where: str) -> np.ndarray:
    """MAX / AVE pooling with Caffe's windows, including the empty ones of ceil mode."""
    if x.ndim != 4:
        raise ConverterError(f"{where}: pooling needs a 4-D input, found {x.shape}")
    n, c, height, width = x.shape
    geometry = pool_geometry(pp, height, width, where)
    (kh, kw), (sh, sw), (ph, pw), (oh, ow) = (
        geometry.kernel,
        geometry.stride,
        geometry.pad,
        geometry.output,
    )
    is_max = pp.pool == caffe_pb2.PoolingParameter.MAX  # else AVE: the shape rule checked
    # Canvas: the image at offset (ph, pw); every window of every output fits inside it.
    # Cells outside the image never win a MAX and add nothing to an AVE sum.
    canvas_h = max((oh - 1) * sh + kh, ph + height)
    canvas_w = max((ow - 1) * sw + kw, pw + width)
    canvas = np.full((n, c, canvas_h, canvas_w), -np.inf if is_max else 0.0, dtype=x.dtype)
    canvas[:, :, ph : ph + height, pw : pw + width] = x
    windows = sliding_window_view(canvas, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw][:, :, :oh, :ow]
    if is_max:
        # Caffe starts from -FLT_MAX and takes strictly greater values: an empty window
        # (or one of only -inf/NaN) stays -FLT_MAX.
        return np.fmax(np.fmax.reduce(windows, axis=(-2, -1)), -FLT_MAX)
    # Divisor: the window clipped to [.., in + pad) but not to the image; 0 for a window
    # starting at the image's end (0/0 = NaN, as in Caffe).
    starts_h, starts_w = np.arange(oh) * sh - ph, np.arange(ow) * sw - pw
    rows = np.minimum(starts_h + kh, height + ph) - starts_h
    cols = np.minimum(starts_w + kw, width + pw) - starts_w
    return windows.sum(axis=(-2, -1)) / (rows[:, None] * cols[None, :]).astype(x.dtype)


@executes("SPP")
def _spp(layer, bottoms, params, where):
    x = bottoms[0]
    levels = [pool(x, p, where) for p in spp_levels(layer.param.spp_param, *x.shape[2:])]
    if len(levels) == 1:
        return levels
    return [np.concatenate([level.reshape(x.shape[0], -1) for level in levels], axis=1)]
