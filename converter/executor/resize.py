"""Resizing layers in NumPy: Interp (DeepLab / PSPNet), Upsample (both forks' meanings),
MaxUnPool, BilinearInterpolate, Resize, PixelShuffle, Pad. Written from the rules in
``converter/layers/resize.py``'s sources, sharing only the size and coordinate rules."""

from __future__ import annotations

import numpy as np

from converter.errors import ConverterError
from converter.executor.registry import executes
from converter.layers.resize import (
    UNPOOL,
    bilinear_size,
    bilinear_source,
    interp_spec,
    max_unpool_size,
    padding,
    pixel_shuffle_factor,
    resize_size,
    resize_source,
    unpool_size,
    upsample_form,
)


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


@executes("Upsample")
def _upsample(layer, bottoms, params, where):
    up = layer.param.upsample_param
    x = bottoms[0]
    if upsample_form(layer, where) == UNPOOL:
        height, width = unpool_size(up, x.shape[2], x.shape[3], where)
        return [unpool(x, bottoms[1], height, width, where)]
    # y[..., h, w] = x[..., h // scale, w // scale] over the last dims_num - 2 axes
    for axis in range(x.ndim - (up.dims_num - 2), x.ndim):
        x = np.repeat(x, up.scale, axis=axis)
    return [x]


@executes("MaxUnPool")
def _max_unpool(layer, bottoms, params, where):
    return [unpool(bottoms[0], bottoms[1], *max_unpool_size(layer, where), where)]


def unpool(x: np.ndarray, mask: np.ndarray, height: int, width: int, where: str) -> np.ndarray:
    """Zeros of (N, C, height, width); plane by plane, x's i-th value (row-major) written at
    position ``int(mask[i])``, later values overwriting earlier ones, as Caffe's loop does."""
    n, c = x.shape[:2]
    if not np.isfinite(mask).all():
        raise ConverterError(f"{where}: the mask holds non-finite values")
    index = mask.reshape(n * c, -1).astype(np.int64)  # truncation, as static_cast<int>
    if index.size and (index.min() < 0 or index.max() >= height * width):
        raise ConverterError(
            f"{where}: the mask names positions {index.min()}..{index.max()}, outside the "
            f"{height}x{width} output"
        )
    size = height * width
    targets = (index + np.arange(n * c)[:, None] * size).reshape(-1)
    values = x.reshape(-1)
    # the last source naming each target wins: its first occurrence in reversed order
    kept, first_reversed = np.unique(targets[::-1], return_index=True)
    top = np.zeros(n * c * size, dtype=x.dtype)
    top[kept] = values[len(values) - 1 - first_reversed]
    return top.reshape(n, c, height, width)


@executes("BilinearInterpolate")
def _bilinear(layer, bottoms, params, where):
    x = bottoms[0]
    height, width = x.shape[2:]
    out_h, out_w = bilinear_size(layer, height, width, where)
    corners = layer.param.bilinear_interpolate_param.align_corners
    rows = bilinear_source(height, out_h, corners).astype(np.float64)
    cols = bilinear_source(width, out_w, corners).astype(np.float64)
    # neighbours h0 = clamp(floor(src), 0, H - 2) and h0 + 1, weights (h1 - src), (src - h0)
    h0 = np.clip(np.floor(rows).astype(np.int64), 0, height - 2)
    w0 = np.clip(np.floor(cols).astype(np.int64), 0, width - 2)
    a = (rows - h0)[:, None]
    b = (cols - w0)[None, :]
    q00 = x[:, :, h0][:, :, :, w0]
    q01 = x[:, :, h0][:, :, :, w0 + 1]
    q10 = x[:, :, h0 + 1][:, :, :, w0]
    q11 = x[:, :, h0 + 1][:, :, :, w0 + 1]
    return [(1 - a) * ((1 - b) * q00 + b * q01) + a * ((1 - b) * q10 + b * q11)]


@executes("Resize")
def _resize(layer, bottoms, params, where):
    x = bottoms[0]
    height, width = x.shape[2:]
    out_h, out_w = resize_size(layer, height, width, where)
    # the 4 neighbours of the source point, weighted (1-a)(1-b), (1-a)b, a(1-b), ab, each
    # dropped when it lies outside the input
    fh, fw = resize_source(height, out_h), resize_source(width, out_w)
    h0, w0 = np.floor(fh).astype(np.int64), np.floor(fw).astype(np.int64)
    a = (fh - h0).astype(np.float64)[:, None]
    b = (fw - w0).astype(np.float64)[None, :]
    h1, w1 = np.minimum(h0 + 1, height - 1), np.minimum(w0 + 1, width - 1)
    has_h1 = (h0 + 1 < height)[:, None]
    has_w1 = (w0 + 1 < width)[None, :]
    rows0, rows1 = x[:, :, h0], x[:, :, h1]
    y = (1 - a) * (1 - b) * rows0[:, :, :, w0]
    y = y + np.where(has_w1, (1 - a) * b * rows0[:, :, :, w1], 0.0)
    y = y + np.where(has_h1, a * (1 - b) * rows1[:, :, :, w0], 0.0)
    y = y + np.where(has_h1 & has_w1, a * b * rows1[:, :, :, w1], 0.0)
    return [y]


@executes("PixelShuffle")
def _pixel_shuffle(layer, bottoms, params, where):
    x = bottoms[0]
    n, c, h, w = x.shape
    r = pixel_shuffle_factor(layer, c, where)
    # y[n, p, i*r + a, j*r + b] = x[n, p*r*r + a*r + b, i, j]
    blocks = x.reshape(n, c // (r * r), r, r, h, w)
    return [blocks.transpose(0, 1, 4, 2, 5, 3).reshape(n, c // (r * r), h * r, w * r)]


_NP_PAD = {"constant": "constant", "replicate": "edge", "reflect": "reflect"}


@executes("Pad")
def _pad(layer, bottoms, params, where):
    x = bottoms[0]
    p = padding(layer, x.shape[2], x.shape[3], where)
    if p.crop:
        return [x[:, :, -p.up : x.shape[2] + p.down, -p.left : x.shape[3] + p.right].copy()]
    widths = ((0, 0), (0, 0), (p.up, p.down), (p.left, p.right))
    if p.mode == "constant":
        return [np.pad(x, widths, mode="constant", constant_values=p.value)]
    return [np.pad(x, widths, mode=_NP_PAD[p.mode])]
