"""The one representation of a Caffe net that every later stage reads, and Caffe's shape rules.

A ``Net`` is an ordered list of ``Layer`` objects in Caffe's TEST phase. Each layer keeps
its upgraded ``LayerParameter`` (typed parameters with Caffe's defaults) and its blobs as
NumPy arrays. ``Net.shapes()`` runs Caffe's shape inference for a given input shape.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from converter import caffe_pb2
from converter.errors import ConverterError
from converter.io.caffemodel import StoredLayer, read_caffemodel, write_layers
from converter.io.prototxt import read_prototxt

Shape = tuple[int, ...]

# Layers whose output has the shape of their first input and that hold no parameters.
_SAME_SHAPE = {
    "ReLU", "Sigmoid", "TanH", "Power", "AbsVal", "Dropout", "Softmax", "LRN", "BNLL",
    "ELU", "Exp", "Log", "Threshold", "Swish", "Clip", "MVN",
}  # fmt: skip


@dataclass
class Layer:
    """One Caffe layer: ``param`` is its LayerParameter, ``blobs`` its learned arrays."""

    name: str
    type: str
    bottoms: list[str]
    tops: list[str]
    param: caffe_pb2.LayerParameter
    blobs: list[np.ndarray] = field(default_factory=list)

    @property
    def in_place(self) -> bool:
        return bool(self.tops) and self.tops == self.bottoms[: len(self.tops)]


@dataclass
class LayerShapes:
    """Shapes Caffe gives one layer for a given input: its tops and its parameter blobs.

    ``param_shapes`` is None for a layer type whose parameters this tool cannot predict.
    """

    top_shapes: list[Shape]
    param_shapes: list[Shape] | None


@dataclass
class Net:
    """A Caffe net in the TEST phase, with the blobs of a caffemodel when one was given."""

    name: str
    layers: list[Layer]
    source: str = "<net>"
    weights_source: str | None = None

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def input_shapes(self) -> dict[str, Shape]:
        """Blob name -> shape for every top of the net's Input layers."""
        shapes: dict[str, Shape] = {}
        for layer in self.layers:
            if layer.type == "Input":
                declared = [tuple(s.dim) for s in layer.param.input_param.shape]
                if len(declared) > 1 and len(declared) != len(layer.tops):
                    raise ConverterError(
                        f"{self.source}: Input layer '{layer.name}' has {len(layer.tops)} tops "
                        f"but {len(declared)} shapes (give one shape, or one per top)"
                    )
                for index, top in enumerate(layer.tops):
                    if not declared:
                        raise ConverterError(
                            f"{self.source}: Input layer '{layer.name}' declares no shape"
                        )
                    shapes[top] = declared[index] if len(declared) > 1 else declared[0]
        return shapes

    def blob_names(self) -> list[str]:
        """Every blob name in the order a forward pass first produces it."""
        names: dict[str, None] = {}
        for layer in self.layers:
            names.update(dict.fromkeys(layer.tops))
        return list(names)

    def outputs(self) -> list[str]:
        """Blobs produced but not consumed later: what Caffe's ``net.forward()`` returns."""
        available: dict[str, None] = {}
        for layer in self.layers:
            for bottom in layer.bottoms:
                available.pop(bottom, None)
            available.update(dict.fromkeys(layer.tops))
        return list(available)

    def shapes(self, input_shapes: Mapping[str, Sequence[int]] | None = None) -> list[LayerShapes]:
        """Caffe's shape inference, one entry per layer; ``input_shapes`` overrides inputs."""
        return infer_shapes(self, input_shapes)

    def blob_shapes(
        self, input_shapes: Mapping[str, Sequence[int]] | None = None
    ) -> dict[str, Shape]:
        """Final shape of every blob (after in-place layers) for the given input."""
        result: dict[str, Shape] = {}
        for layer, shapes in zip(self.layers, self.shapes(input_shapes)):
            result.update(zip(layer.tops, shapes.top_shapes))
        return result


# ----------------------------------------------------------------------------- reading


def read_net(prototxt: str | os.PathLike, caffemodel: str | os.PathLike | None = None) -> Net:
    """Read a net definition, and its weights when a caffemodel is given.

    Checks the pair the way Caffe does when it copies trained layers, only stricter: every
    layer that needs parameters must find them, with the shapes the prototxt implies.
    """
    with gc_paused():
        net = net_from_param(read_prototxt(prototxt), str(prototxt))
        if caffemodel is not None:
            attach_weights(net, read_caffemodel(caffemodel), str(caffemodel))
    return net


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for a bounded burst of work.

    Reading and mapping a net make many small objects but no reference cycles; the
    allocations alone can trigger a full collection over everything imported (with torch,
    hundreds of thousands of objects), which costs more than reading a prototxt.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def net_from_param(param: caffe_pb2.NetParameter, source: str = "<net>") -> Net:
    """Build a Net (TEST phase, no weights) from an upgraded NetParameter."""
    layers = []
    seen_names: set[str] = set()
    for lp in param.layer:
        if not _included_in_test(lp, param.state):
            continue
        if lp.name in seen_names:
            raise ConverterError(f"{source}: layer name '{lp.name}' is used twice")
        seen_names.add(lp.name)
        layers.append(Layer(lp.name, lp.type, list(lp.bottom), list(lp.top), lp))
    if not layers:
        raise ConverterError(f"{source}: the net has no layers")
    net = Net(name=param.name, layers=layers, source=source)
    _check_wiring(net)
    return net


def _rule_met(rule: caffe_pb2.NetStateRule, state: caffe_pb2.NetState) -> bool:
    phase = caffe_pb2.TEST
    level = state.level
    stages = set(state.stage)
    if rule.HasField("phase") and rule.phase != phase:
        return False
    if rule.HasField("min_level") and level < rule.min_level:
        return False
    if rule.HasField("max_level") and level > rule.max_level:
        return False
    if any(stage not in stages for stage in rule.stage):
        return False
    return not any(stage in stages for stage in rule.not_stage)


def _included_in_test(lp: caffe_pb2.LayerParameter, state: caffe_pb2.NetState) -> bool:
    included = not lp.include
    for rule in lp.exclude:
        if _rule_met(rule, state):
            included = False
    for rule in lp.include:
        if _rule_met(rule, state):
            included = True
    return included


def _check_wiring(net: Net) -> None:
    available: set[str] = set()
    for layer in net.layers:
        for bottom in layer.bottoms:
            if bottom not in available:
                raise ConverterError(
                    f"{net.source}: layer '{layer.name}' reads blob '{bottom}', "
                    "which no earlier layer produces"
                )
        available.update(layer.tops)


def attach_weights(net: Net, stored: list[StoredLayer], weights_source: str) -> None:
    """Give each layer its stored blobs after checking names, counts and shapes."""
    by_name: dict[str, StoredLayer] = {}
    for item in stored:
        if item.name in by_name and item.blobs and by_name[item.name].blobs:
            raise ConverterError(f"{weights_source}: layer '{item.name}' is stored twice")
        if item.blobs or item.name not in by_name:
            by_name[item.name] = item
    try:
        expected_all = net.shapes()
    except ConverterError:
        expected_all = [LayerShapes([], None)] * len(net.layers)
    problems: list[str] = []
    for layer, shapes in zip(net.layers, expected_all):
        item = by_name.pop(layer.name, None)
        expected = shapes.param_shapes
        if item is None or not item.blobs:
            if expected:
                problems.append(
                    f"layer '{layer.name}' ({layer.type}) needs {len(expected)} blob(s) "
                    "but the caffemodel has none for it"
                )
            continue
        if expected is not None and len(item.blobs) != len(expected):
            problems.append(
                f"layer '{layer.name}' ({layer.type}): the prototxt implies "
                f"{len(expected)} blob(s) {_fmt(expected)}, the caffemodel has {len(item.blobs)} "
                f"{_fmt([b.shape for b in item.blobs])}"
            )
            continue
        blobs = []
        for index, (blob, legacy) in enumerate(zip(item.blobs, item.legacy_dims)):
            if expected is None:
                blobs.append(blob)
                continue
            want = tuple(expected[index])
            if tuple(blob.shape) == want:
                blobs.append(blob)
            elif legacy and _legacy_matches(blob.shape, want):
                blobs.append(blob.reshape(want))
            else:
                problems.append(
                    f"layer '{layer.name}' blob {index}: the prototxt implies shape {want}, "
                    f"the caffemodel has {tuple(blob.shape)}"
                )
        layer.blobs = blobs
    extra = [name for name, item in by_name.items() if item.blobs]
    if extra:
        listed = ", ".join(f"'{n}'" for n in extra[:10]) + (" ..." if len(extra) > 10 else "")
        problems.append(
            f"{len(extra)} layer(s) with weights are not in the prototxt {net.source}: {listed}"
        )
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise ConverterError(f"{weights_source}: does not match {net.source}: {problems[0]}{more}")
    net.weights_source = weights_source


def _legacy_matches(legacy: Sequence[int], want: Shape) -> bool:
    """Caffe's ShapeEquals for num/channels/height/width blobs: right-aligned, padded with 1."""
    return len(want) <= 4 and tuple(legacy) == (1,) * (4 - len(want)) + tuple(want)


def _fmt(shapes) -> str:
    return "[" + ", ".join(str(tuple(s)) for s in shapes) + "]"


# ----------------------------------------------------------------------------- shapes


def canonical_axis(axis: int, ndim: int, where: str) -> int:
    if not -ndim <= axis < ndim:
        raise ConverterError(f"{where}: axis {axis} is out of range for a {ndim}-D blob")
    return axis % ndim


def conv_geometry(cp: caffe_pb2.ConvolutionParameter, spatial: int, where: str):
    """(kernel, stride, pad, dilation) per spatial axis, by Caffe's rules for repeated values."""

    def expand(values: Sequence[int], h: int | None, w: int | None, default: int, what: str):
        if h is not None or w is not None:
            if spatial != 2:
                raise ConverterError(f"{where}: {what}_h/{what}_w need 2 spatial axes")
            if values:
                raise ConverterError(f"{where}: give either {what} or {what}_h/{what}_w")
            return [h if h is not None else default, w if w is not None else default]
        if not values:
            return [default] * spatial
        if len(values) == 1:
            return [values[0]] * spatial
        if len(values) != spatial:
            raise ConverterError(
                f"{where}: {what} has {len(values)} values for {spatial} spatial axes"
            )
        return list(values)

    def hw(name: str):
        h, w = f"{name}_h", f"{name}_w"
        return (
            getattr(cp, h) if cp.HasField(h) else None,
            getattr(cp, w) if cp.HasField(w) else None,
        )

    kernel = expand(cp.kernel_size, *hw("kernel"), 0, "kernel_size")
    stride = expand(cp.stride, *hw("stride"), 1, "stride")
    pad = expand(cp.pad, *hw("pad"), 0, "pad")
    dilation = expand(cp.dilation, None, None, 1, "dilation")
    if any(k <= 0 for k in kernel):
        raise ConverterError(f"{where}: kernel size must be positive, found {kernel}")
    if any(s <= 0 for s in stride) or any(d <= 0 for d in dilation):
        raise ConverterError(f"{where}: stride and dilation must be positive")
    return kernel, stride, pad, dilation


@dataclass
class PoolGeometry:
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int]
    output: tuple[int, int]


def pool_geometry(pp: caffe_pb2.PoolingParameter, height: int, width: int, where: str):
    """Kernel, stride, pad and output size of a Pooling layer, exactly as Caffe computes them."""
    if pp.global_pooling:
        kernel = (height, width)
    elif pp.HasField("kernel_h") or pp.HasField("kernel_w"):
        kernel = (pp.kernel_h, pp.kernel_w)
    elif pp.HasField("kernel_size"):
        kernel = (pp.kernel_size, pp.kernel_size)
    else:
        raise ConverterError(f"{where}: pooling needs kernel_size or kernel_h/kernel_w")
    pad = (pp.pad_h, pp.pad_w) if pp.HasField("pad_h") or pp.HasField("pad_w") else (pp.pad,) * 2
    if pp.HasField("stride_h") or pp.HasField("stride_w"):
        stride = (pp.stride_h, pp.stride_w)
    else:
        stride = (pp.stride,) * 2
    if pp.global_pooling:
        if any(pad) or stride != (1, 1):
            raise ConverterError(f"{where}: global pooling needs pad 0 and stride 1")
    if min(kernel) <= 0 or min(stride) <= 0 or min(pad) < 0:
        raise ConverterError(f"{where}: pooling kernel/stride must be positive, pad >= 0")
    if pad[0] >= kernel[0] or pad[1] >= kernel[1]:
        raise ConverterError(f"{where}: pooling pad {pad} must be smaller than kernel {kernel}")
    floor = pp.round_mode == caffe_pb2.PoolingParameter.FLOOR
    output = []
    for size, k, s, p in zip((height, width), kernel, stride, pad):
        span = size + 2 * p - k
        out = (span // s if floor else -(-span // s)) + 1
        output.append(out)
    if any(pad):  # Caffe applies the clip to both axes when either has padding
        for axis in range(2):
            if (output[axis] - 1) * stride[axis] >= (height, width)[axis] + pad[axis]:
                output[axis] -= 1
    if pp.global_pooling:
        output = [1, 1]
    if min(output) <= 0:
        raise ConverterError(f"{where}: pooling gives an empty output for input {height}x{width}")
    return PoolGeometry(kernel, stride, pad, (output[0], output[1]))


def infer_shapes(
    net: Net, input_shapes: Mapping[str, Sequence[int]] | None = None
) -> list[LayerShapes]:
    """Run Caffe's Reshape logic over the net, layer by layer."""
    blobs: dict[str, Shape] = {}
    overrides = {k: tuple(int(d) for d in v) for k, v in (input_shapes or {}).items()}
    result = []
    for layer in net.layers:
        where = f"{net.source}: layer '{layer.name}' ({layer.type})"
        bottoms = [blobs[b] for b in layer.bottoms]
        if layer.type == "Input":
            declared = net.input_shapes()
            tops = [overrides.get(t, declared[t]) for t in layer.tops]
            shapes = LayerShapes(tops, [])
        else:
            shapes = _layer_shapes(layer, bottoms, where)
        if len(shapes.top_shapes) != len(layer.tops):
            raise ConverterError(
                f"{where}: expected {len(shapes.top_shapes)} top(s), found {len(layer.tops)}"
            )
        for top, shape in zip(layer.tops, shapes.top_shapes):
            if any(d < 0 for d in shape):
                raise ConverterError(f"{where}: computed a negative size {shape} for '{top}'")
            blobs[top] = tuple(int(d) for d in shape)
        result.append(shapes)
    return result


def _need_bottoms(bottoms: list[Shape], count: int | tuple[int, int], where: str) -> None:
    low, high = (count, count) if isinstance(count, int) else count
    if not low <= len(bottoms) <= high:
        raise ConverterError(f"{where}: expected {count} bottom(s), found {len(bottoms)}")


def _layer_shapes(layer: Layer, bottoms: list[Shape], where: str) -> LayerShapes:
    t, p = layer.type, layer.param
    if t in ("Convolution", "Deconvolution"):
        return _conv_shapes(p.convolution_param, bottoms, where, deconv=t == "Deconvolution")
    if t == "InnerProduct":
        _need_bottoms(bottoms, 1, where)
        ip = p.inner_product_param
        axis = canonical_axis(ip.axis, len(bottoms[0]), where)
        k = math.prod(bottoms[0][axis:])
        n = ip.num_output
        params = [(k, n) if ip.transpose else (n, k)] + ([(n,)] if ip.bias_term else [])
        return LayerShapes([bottoms[0][:axis] + (n,)], params)
    if t == "Pooling":
        _need_bottoms(bottoms, 1, where)
        if len(bottoms[0]) != 4:
            raise ConverterError(f"{where}: pooling needs a 4-D input, found {bottoms[0]}")
        n, c, h, w = bottoms[0]
        geometry = pool_geometry(p.pooling_param, h, w, where)
        return LayerShapes([(n, c) + geometry.output], [])
    if t == "BatchNorm":
        _need_bottoms(bottoms, 1, where)
        channels = bottoms[0][1] if len(bottoms[0]) > 1 else 1
        return LayerShapes([bottoms[0]], [(channels,), (channels,), (1,)])
    if t in ("Scale", "Bias"):
        return _scale_shapes(layer, bottoms, where)
    if t == "PReLU":
        _need_bottoms(bottoms, 1, where)
        channels = bottoms[0][1] if len(bottoms[0]) > 1 else 1
        shared = p.prelu_param.channel_shared
        return LayerShapes([bottoms[0]], [() if shared else (channels,)])
    if t in _SAME_SHAPE:
        _need_bottoms(bottoms, 1, where)
        return LayerShapes([bottoms[0]], [])
    if t == "Eltwise":
        _need_bottoms(bottoms, (2, 1 << 30), where)
        if any(b != bottoms[0] for b in bottoms):
            raise ConverterError(f"{where}: inputs differ in shape: {bottoms}")
        if p.eltwise_param.coeff and len(p.eltwise_param.coeff) != len(bottoms):
            raise ConverterError(
                f"{where}: {len(p.eltwise_param.coeff)} coeffs for {len(bottoms)} inputs"
            )
        return LayerShapes([bottoms[0]], [])
    if t == "Split":
        _need_bottoms(bottoms, 1, where)
        return LayerShapes([bottoms[0]] * len(layer.tops), [])
    if t == "Concat":
        return _concat_shapes(p.concat_param, bottoms, where)
    if t == "Slice":
        return _slice_shapes(p.slice_param, bottoms, len(layer.tops), where)
    if t == "Flatten":
        _need_bottoms(bottoms, 1, where)
        shape = bottoms[0]
        start = canonical_axis(p.flatten_param.axis, len(shape), where)
        end = canonical_axis(p.flatten_param.end_axis, len(shape), where)
        return LayerShapes(
            [shape[:start] + (math.prod(shape[start : end + 1]),) + shape[end + 1 :]], []
        )
    if t == "Reshape":
        _need_bottoms(bottoms, 1, where)
        return LayerShapes([reshape_shape(p.reshape_param, bottoms[0], where)], [])
    raise ConverterError(f"{where}: layer type '{t}' is not supported")


def _conv_shapes(cp, bottoms: list[Shape], where: str, deconv: bool) -> LayerShapes:
    _need_bottoms(bottoms, (1, 1 << 30), where)
    shape = bottoms[0]
    axis = canonical_axis(cp.axis, len(shape), where)
    spatial = len(shape) - axis - 1
    kernel, stride, pad, dilation = conv_geometry(cp, spatial, where)
    channels, group, n_out = shape[axis], cp.group, cp.num_output
    if group <= 0 or channels % group or n_out % group:
        raise ConverterError(
            f"{where}: {channels} input and {n_out} output channels are not divisible "
            f"by group {group}"
        )
    out = []
    for size, k, s, pd, d in zip(shape[axis + 1 :], kernel, stride, pad, dilation):
        extent = d * (k - 1) + 1
        out.append(
            s * (size - 1) + extent - 2 * pd if deconv else (size + 2 * pd - extent) // s + 1
        )
    if deconv:
        weight = (channels, n_out // group, *kernel)
    else:
        weight = (n_out, channels // group, *kernel)
    params = [weight] + ([(n_out,)] if cp.bias_term else [])
    top = shape[:axis] + (n_out, *out)
    return LayerShapes([top] * len(bottoms), params)


def _scale_shapes(layer: Layer, bottoms: list[Shape], where: str) -> LayerShapes:
    _need_bottoms(bottoms, (1, 2), where)
    sp = layer.param.scale_param if layer.type == "Scale" else layer.param.bias_param
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
    if layer.type == "Bias":
        params = [] if len(bottoms) == 2 else [operand]
    else:
        params = [] if len(bottoms) == 2 else [operand]
        if sp.bias_term:
            params.append(operand)
    return LayerShapes([shape], params)


def _concat_shapes(cp, bottoms: list[Shape], where: str) -> LayerShapes:
    _need_bottoms(bottoms, (1, 1 << 30), where)
    axis_value = cp.concat_dim if cp.HasField("concat_dim") else cp.axis
    axis = canonical_axis(axis_value, len(bottoms[0]), where)
    for b in bottoms[1:]:
        if len(b) != len(bottoms[0]) or any(
            x != y for i, (x, y) in enumerate(zip(b, bottoms[0])) if i != axis
        ):
            raise ConverterError(f"{where}: inputs {bottoms} differ outside axis {axis}")
    total = sum(b[axis] for b in bottoms)
    return LayerShapes([bottoms[0][:axis] + (total,) + bottoms[0][axis + 1 :]], [])


def _slice_shapes(sp, bottoms: list[Shape], n_tops: int, where: str) -> LayerShapes:
    _need_bottoms(bottoms, 1, where)
    shape = bottoms[0]
    axis_value = sp.slice_dim if sp.HasField("slice_dim") else sp.axis
    axis = canonical_axis(axis_value, len(shape), where)
    size = shape[axis]
    points = list(sp.slice_point)
    if n_tops < 1:
        raise ConverterError(f"{where}: a Slice layer needs at least one top")
    if points:
        if len(points) != n_tops - 1 or points != sorted(points) or points[-1] >= size:
            raise ConverterError(
                f"{where}: slice points {points} do not fit {n_tops} tops of {size}"
            )
        bounds = [0, *points, size]
        sizes = [b - a for a, b in zip(bounds, bounds[1:])]
    else:
        if size % n_tops:
            raise ConverterError(f"{where}: {size} does not split evenly into {n_tops} tops")
        sizes = [size // n_tops] * n_tops
    return LayerShapes([shape[:axis] + (s,) + shape[axis + 1 :] for s in sizes], [])


def slice_bounds(sp, size: int, n_tops: int) -> list[tuple[int, int]]:
    """[start, end) of each Slice top along the slice axis."""
    points = list(sp.slice_point) or [size // n_tops * i for i in range(1, n_tops)]
    bounds = [0, *points, size]
    return list(zip(bounds, bounds[1:]))


def reshape_shape(rp, shape: Shape, where: str) -> Shape:
    """Top shape of a Reshape layer: 0 copies an input axis, -1 is inferred (Caffe rules)."""
    dims = list(rp.shape.dim)
    start = canonical_axis(rp.axis, len(shape) + 1, where) if rp.axis < 0 else rp.axis
    if rp.axis < 0:
        start = len(shape) + 1 + rp.axis
    if start > len(shape):
        raise ConverterError(f"{where}: reshape axis {rp.axis} out of range for {shape}")
    end = len(shape) if rp.num_axes == -1 else start + rp.num_axes
    if rp.num_axes < -1 or end > len(shape):
        raise ConverterError(f"{where}: reshape num_axes {rp.num_axes} out of range for {shape}")
    new = []
    for i, d in enumerate(dims):
        if d == 0:
            if start + i >= len(shape):
                raise ConverterError(f"{where}: reshape dim {i} copies a missing input axis")
            new.append(shape[start + i])
        else:
            new.append(d)
    if new.count(-1) > 1 or any(d < -1 for d in new):
        raise ConverterError(f"{where}: invalid reshape dims {dims}")
    result = list(shape[:start]) + new + list(shape[end:])
    if -1 in result:
        known = math.prod(d for d in result if d != -1)
        total = math.prod(shape)
        if known == 0 or total % known:
            raise ConverterError(f"{where}: cannot infer -1 reshaping {shape} to {dims}")
        result[result.index(-1)] = total // known
    if math.prod(result) != math.prod(shape):
        raise ConverterError(f"{where}: reshape of {shape} to {tuple(result)} changes the count")
    return tuple(result)


def write_caffemodel(net: Net, path: str | os.PathLike) -> None:
    """Write ``net``'s layers and blobs as a binary caffemodel Caffe can load (atomically).

    Each layer is stored with its parameters, as Caffe's ``net.save`` does; blob data is
    streamed from the arrays without building protobuf messages for it.
    """

    def layers():
        for layer in net.layers:
            header = caffe_pb2.LayerParameter()
            header.CopyFrom(layer.param)
            del header.blobs[:]
            yield header.SerializeToString(), layer.blobs

    write_layers(path, net.name, layers())
