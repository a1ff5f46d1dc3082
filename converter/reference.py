"""NumPy executor of Caffe's TEST-phase forward pass: the independent reference.

It computes every blob of a ``Net`` in float64 (or a given dtype) with Caffe's own rules:
pooling sizes and divisors, BatchNorm's stored scale factor, in-place layers overwriting
their blob, the empty windows of ceil-mode pooling. It shares no code with the torch side
on purpose, so that agreement between the two means something.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from converter import caffe_pb2
from converter.errors import ConverterError
from converter.net import Layer, Net, canonical_axis, conv_geometry, pool_geometry, slice_bounds

FLT_MAX = float(np.finfo(np.float32).max)  # Caffe's start value for MAX pooling


def run_reference(
    net: Net, inputs: np.ndarray | Mapping[str, np.ndarray], dtype=np.float64
) -> dict[str, np.ndarray]:
    """Run ``net`` on ``inputs`` and return every blob as Caffe holds it after the forward.

    ``inputs`` is one array for a single-input net, or {input blob name: array}. Shapes
    may differ from the prototxt's (another batch size): everything follows the arrays.
    The result maps each name of ``net.blob_names()`` (in that order) to its final value,
    i.e. after the last in-place layer writing that blob.
    """
    dtype = np.dtype(dtype)
    unsupported = [layer for layer in net.layers if layer.type not in _FORWARD]
    if unsupported:
        types = sorted({layer.type for layer in unsupported})
        listed = ", ".join(f"'{layer.name}' ({layer.type})" for layer in unsupported)
        raise ConverterError(
            f"{net.source}: the reference executor does not support layer type(s) "
            f"{', '.join(types)}; used by layer(s) {listed}"
        )
    values = _input_values(net, inputs, dtype)
    shapes = net.shapes({name: array.shape for name, array in values.items()})
    blobs: dict[str, np.ndarray] = {}
    for layer, layer_shapes in zip(net.layers, shapes):
        where = f"{net.source}: layer '{layer.name}' ({layer.type})"
        if layer.type == "Input":
            tops = [values[top] for top in layer.tops]
        else:
            params = _params(layer, layer_shapes.param_shapes, dtype, where)
            bottoms = [blobs[name] for name in layer.bottoms]
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                tops = _FORWARD[layer.type](layer, bottoms, params, where)
            if layer.type == "Reshape":  # the one layer whose output shape is pure bookkeeping
                tops = [tops[0].reshape(layer_shapes.top_shapes[0])]
        for top, value, expected in zip(layer.tops, tops, layer_shapes.top_shapes):
            if value.shape != tuple(expected):
                raise RuntimeError(
                    f"{where}: computed shape {value.shape} for '{top}', shape inference "
                    f"says {tuple(expected)} (internal inconsistency)"
                )
            blobs[top] = value.astype(dtype, copy=False)
    return {name: blobs[name] for name in net.blob_names()}


# ----------------------------------------------------------------------------- plumbing

Forward = Callable[[Layer, list[np.ndarray], list[np.ndarray], str], list[np.ndarray]]


def _input_values(net: Net, inputs, dtype: np.dtype) -> dict[str, np.ndarray]:
    """Map every Input top to a private copy of the caller's array, in ``dtype``."""
    names = [top for layer in net.layers if layer.type == "Input" for top in layer.tops]
    if not names:
        raise ConverterError(f"{net.source}: the net has no Input layer to feed")
    if not isinstance(inputs, Mapping):
        if len(names) != 1:
            raise ConverterError(
                f"{net.source}: the net has {len(names)} inputs ({', '.join(names)}); "
                "pass a dict {blob name: array}"
            )
        inputs = {names[0]: inputs}
    missing = [name for name in names if name not in inputs]
    extra = [name for name in inputs if name not in names]
    if missing or extra:
        raise ConverterError(
            f"{net.source}: inputs must be exactly the input blobs {names}; "
            f"missing {missing}, unknown {extra}"
        )
    return {name: np.array(inputs[name], dtype=dtype) for name in names}


def _params(layer: Layer, expected, dtype: np.dtype, where: str) -> list[np.ndarray]:
    """The layer's blobs in ``dtype``, after checking them against the implied shapes."""
    if layer.type == "BatchNorm" and not _use_global_stats(layer) and not layer.blobs:
        return []  # batch statistics: the stored moving averages are not read
    expected = [tuple(shape) for shape in expected or []]
    found = [tuple(blob.shape) for blob in layer.blobs]
    if found != expected:
        raise ConverterError(
            f"{where}: needs {len(expected)} parameter blob(s) of shapes {expected}, "
            f"found {len(found)} of shapes {found}"
        )
    return [np.asarray(blob, dtype=dtype) for blob in layer.blobs]


def _broadcast(operand: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """Reshape ``operand`` so it lines up with axes [axis, axis + operand.ndim) of an array."""
    return operand.reshape(operand.shape + (1,) * (ndim - axis - operand.ndim))


# ----------------------------------------------------------------------------- convolution


def _convolution(layer, bottoms, params, where):
    cp = layer.param.convolution_param
    return [_conv(x, params, cp, where) for x in bottoms]


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
        out += _broadcast(params[1], out.ndim, 1)
    return out.reshape(lead + (n_out,) + out_size)


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
        out = out + _broadcast(params[1], out.ndim, 1)
    return out.reshape(lead + out.shape[1:])


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


# ----------------------------------------------------------------------------- normalisation


def _use_global_stats(layer: Layer) -> bool:
    bp = layer.param.batch_norm_param
    return bp.use_global_stats if bp.HasField("use_global_stats") else True  # TEST phase


def _batch_norm(layer, bottoms, params, where):
    x = bottoms[0]
    channels = x.shape[1] if x.ndim > 1 else 1
    x3 = x.reshape(x.shape[0], channels, -1)
    if _use_global_stats(layer):
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


def _scale(layer, bottoms, params, where):
    sp = layer.param.scale_param
    x = bottoms[0]
    scale = bottoms[1] if len(bottoms) == 2 else params[0]
    axis = _operand_axis(sp, x, scale, where)
    y = x * _broadcast(scale, x.ndim, axis)
    if sp.bias_term:
        y = y + _broadcast(params[-1], x.ndim, axis)
    return [y]


def _bias(layer, bottoms, params, where):
    x = bottoms[0]
    bias = bottoms[1] if len(bottoms) == 2 else params[0]
    axis = _operand_axis(layer.param.bias_param, x, bias, where)
    return [x + _broadcast(bias, x.ndim, axis)]


def _lrn(layer, bottoms, params, where):
    lp = layer.param.lrn_param
    x = bottoms[0]
    size = lp.local_size
    if size % 2 == 0:
        raise ConverterError(f"{where}: local_size must be odd, found {size}")
    if x.ndim != 4:
        raise ConverterError(f"{where}: LRN needs a 4-D input, found {x.shape}")
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
        pool = caffe_pb2.PoolingParameter(
            pool=caffe_pb2.PoolingParameter.AVE, kernel_size=size, pad=half
        )
        scale = 1.0 + lp.alpha * _pool(square, pool, where)
    return [x * np.power(scale, -lp.beta)]


def _softmax(layer, bottoms, params, where):
    x = bottoms[0]
    axis = canonical_axis(layer.param.softmax_param.axis, x.ndim, where)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return [e / e.sum(axis=axis, keepdims=True)]


# ----------------------------------------------------------------------------- pooling


def _pooling(layer, bottoms, params, where):
    return [_pool(bottoms[0], layer.param.pooling_param, where)]


def _pool(x: np.ndarray, pp, where: str) -> np.ndarray:
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
    is_max = pp.pool == caffe_pb2.PoolingParameter.MAX
    if not is_max and pp.pool != caffe_pb2.PoolingParameter.AVE:
        method = caffe_pb2.PoolingParameter.PoolMethod.Name(pp.pool)
        raise ConverterError(f"{where}: pooling method {method} is not supported (MAX, AVE)")
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


# ----------------------------------------------------------------------------- elementwise


def _relu(layer, bottoms, params, where):
    x, slope = bottoms[0], layer.param.relu_param.negative_slope
    return [np.maximum(x, 0) + slope * np.minimum(x, 0)]


def _prelu(layer, bottoms, params, where):
    x = bottoms[0]
    if x.ndim < 2:
        raise ConverterError(f"{where}: PReLU needs at least 2 axes, found {x.shape}")
    slope = params[0]
    slope = slope.reshape(()) if slope.ndim == 0 else _broadcast(slope, x.ndim, 1)
    return [np.maximum(x, 0) + slope * np.minimum(x, 0)]


def _power(layer, bottoms, params, where):
    pp = layer.param.power_param
    x = bottoms[0]
    if pp.power == 0 or pp.scale == 0:  # Caffe fills a constant, even where x is inf/NaN
        value = 1.0 if pp.power == 0 else np.power(np.float64(pp.shift), pp.power)
        return [np.full_like(x, value)]
    return [np.power(pp.shift + pp.scale * x, pp.power)]


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


def _concat(layer, bottoms, params, where):
    cp = layer.param.concat_param
    axis_value = cp.concat_dim if cp.HasField("concat_dim") else cp.axis
    return [np.concatenate(bottoms, axis=canonical_axis(axis_value, bottoms[0].ndim, where))]


def _slice(layer, bottoms, params, where):
    sp = layer.param.slice_param
    x = bottoms[0]
    axis_value = sp.slice_dim if sp.HasField("slice_dim") else sp.axis
    axis = canonical_axis(axis_value, x.ndim, where)
    bounds = slice_bounds(sp, x.shape[axis], len(layer.tops))
    lead = (slice(None),) * axis
    return [x[lead + (slice(start, end),)].copy() for start, end in bounds]


def _flatten(layer, bottoms, params, where):
    x, fp = bottoms[0], layer.param.flatten_param
    start = canonical_axis(fp.axis, x.ndim, where)
    end = canonical_axis(fp.end_axis, x.ndim, where)
    return [x.reshape(x.shape[:start] + (-1,) + x.shape[end + 1 :]).copy()]


_FORWARD: dict[str, Forward] = {
    "Convolution": _convolution,
    "Deconvolution": _deconvolution,
    "InnerProduct": _inner_product,
    "BatchNorm": _batch_norm,
    "Scale": _scale,
    "Bias": _bias,
    "LRN": _lrn,
    "Softmax": _softmax,
    "Pooling": _pooling,
    "ReLU": _relu,
    "PReLU": _prelu,
    "Sigmoid": lambda layer, b, p, w: [1.0 / (1.0 + np.exp(-b[0]))],
    "TanH": lambda layer, b, p, w: [np.tanh(b[0])],
    "AbsVal": lambda layer, b, p, w: [np.abs(b[0])],
    "Power": _power,
    "Eltwise": _eltwise,
    "Concat": _concat,
    "Slice": _slice,
    "Split": lambda layer, b, p, w: [b[0].copy() for _ in layer.tops],
    "Flatten": _flatten,
    "Reshape": lambda layer, b, p, w: [b[0].copy()],  # the shape comes from run_reference
    "Dropout": lambda layer, b, p, w: [b[0].copy()],  # identity in the TEST phase
    "Input": lambda layer, b, p, w: [],  # fed by run_reference
}
