"""Any Caffe net made of supported layers, as one ``torch.nn.Module`` with Caffe's exact semantics.

``CaffeGraph`` holds one submodule per Caffe layer and runs them in the net's order on a
dictionary of named blobs, the way Caffe's ``Net::Forward`` does: an in-place layer
(``top == bottom``) replaces the blob's value, so ``forward_blobs()`` returns what
``net.blobs[name]`` holds after Caffe's forward pass. Blobs that Caffe makes share memory
(Split, Flatten, Reshape, a one-input Concat, a one-output Slice) are kept in step when an
in-place layer later writes to one of them.

Module names are the Caffe layer names made into Python identifiers: every character
outside ``[A-Za-z0-9_]`` becomes ``_``, a leading digit gets a ``layer_`` prefix, and a name
that is taken (by an earlier layer or an ``nn.Module`` attribute) gets ``_2``, ``_3``, ...
``CaffeGraph.module_names`` maps each Caffe layer name to its module name.

State dict keys (``<m>`` is the module name; shapes are Caffe's blob shapes):

- Convolution / Deconvolution: ``<m>.weight`` (blob 0, the layout torch uses too),
  ``<m>.bias`` (blob 1, when ``bias_term``).
- InnerProduct: ``<m>.weight`` (blob 0: ``(N, K)``, or ``(K, N)`` with ``transpose``),
  ``<m>.bias``.
- BatchNorm: buffers ``<m>.running_mean`` and ``<m>.running_var``: blobs 0 and 1 already
  multiplied by Caffe's factor (``0`` if the stored scale factor is 0, else ``1 / factor``).
- Scale: ``<m>.weight`` (gamma, absent in the two-input form), ``<m>.bias`` (beta).
- Bias: ``<m>.bias``. PReLU: ``<m>.weight`` (``(C,)``, or ``()`` when channel-shared).
"""

from __future__ import annotations

import keyword
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from google.protobuf import text_format
from torch import nn

from converter import caffe_pb2
from converter.errors import ConverterError
from converter.export import owned_tensors
from converter.io.prototxt import parse_prototxt
from converter.net import (
    Layer,
    Net,
    canonical_axis,
    conv_geometry,
    net_from_param,
    pool_geometry,
    reshape_shape,
    slice_bounds,
)

SUPPORTED_LAYER_TYPES = frozenset(
    {
        "Input", "Convolution", "Deconvolution", "InnerProduct", "BatchNorm", "Scale", "Bias",
        "ReLU", "PReLU", "Sigmoid", "TanH", "Power", "AbsVal", "Pooling", "Eltwise", "Concat",
        "Slice", "Split", "Flatten", "Reshape", "Dropout", "Softmax", "LRN",
    }
)  # fmt: skip

# Types Caffe computes correctly when top == bottom (element-wise, or copy-then-modify).
_IN_PLACE_TYPES = frozenset(
    {"ReLU", "PReLU", "Sigmoid", "TanH", "Power", "AbsVal", "BatchNorm", "Scale", "Bias",
     "Dropout", "Softmax"}
)  # fmt: skip

_FLT_MAX = float(np.finfo(np.float32).max)


def supported_layer_types() -> list[str]:
    """The Caffe layer types ``CaffeGraph`` can run, sorted."""
    return sorted(SUPPORTED_LAYER_TYPES)


# ----------------------------------------------------------------------------- layer modules


class CaffeInput(nn.Module):
    """An Input layer: passes the net's input tensors through as its tops."""

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return inputs


class InnerProduct(nn.Module):
    """Caffe's InnerProduct: flatten every axis from ``axis``, then ``x W^T + b``."""

    def __init__(self, axis: int, weight_shape: Sequence[int], bias: bool, transpose: bool):
        super().__init__()
        self.axis = axis
        self.transpose = transpose
        self.weight = nn.Parameter(torch.zeros(tuple(weight_shape)))
        n_out = weight_shape[1] if transpose else weight_shape[0]
        self.bias = nn.Parameter(torch.zeros(n_out)) if bias else None

    def extra_repr(self) -> str:
        return f"axis={self.axis}, weight={tuple(self.weight.shape)}, transpose={self.transpose}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.t() if self.transpose else self.weight
        return F.linear(x.flatten(self.axis), weight, self.bias)


class BatchNorm(nn.Module):
    """Caffe's BatchNorm (no affine part): ``(x - mean) / sqrt(var + eps)`` per channel.

    With ``use_global_stats: false`` Caffe normalises with the batch mean and the biased
    batch variance even in the TEST phase, so this module does too, whatever ``training`` is.
    """

    def __init__(self, channels: int, eps: float, use_global_stats: bool):
        super().__init__()
        self.eps = eps
        self.use_global_stats = use_global_stats
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def extra_repr(self) -> str:
        return f"{len(self.running_mean)}, eps={self.eps}, use_global_stats={self.use_global_stats}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        view = (1, -1) + (1,) * (x.dim() - 2)
        if self.use_global_stats:
            mean, var = self.running_mean.reshape(view), self.running_var.reshape(view)
        else:
            dims = [0, *range(2, x.dim())]
            mean = x.mean(dim=dims, keepdim=True)
            var = (x - mean).square().mean(dim=dims, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps)


def _along(t: torch.Tensor, axis: int, ndim: int) -> torch.Tensor:
    """View ``t`` so that its axes line up with axes ``axis...`` of an ``ndim``-D tensor."""
    return t.reshape((1,) * axis + tuple(t.shape) + (1,) * (ndim - axis - t.dim()))


class Scale(nn.Module):
    """Caffe's Scale: ``x * gamma (+ beta)``, gamma learned or given as a second input."""

    def __init__(self, axis: int, shape: Sequence[int], learned: bool, bias: bool):
        super().__init__()
        self.axis = axis
        self.weight = nn.Parameter(torch.ones(tuple(shape))) if learned else None
        self.bias = nn.Parameter(torch.zeros(tuple(shape))) if bias else None

    def forward(self, x: torch.Tensor, factor: torch.Tensor | None = None) -> torch.Tensor:
        gamma = self.weight if factor is None else factor
        y = x * _along(gamma, self.axis, x.dim())
        if self.bias is not None:
            y = y + _along(self.bias, self.axis, x.dim())
        return y


class Bias(nn.Module):
    """Caffe's Bias: ``x + b``, b learned or given as a second input."""

    def __init__(self, axis: int, shape: Sequence[int] | None):
        super().__init__()
        self.axis = axis
        self.bias = nn.Parameter(torch.zeros(tuple(shape))) if shape is not None else None

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        b = self.bias if bias is None else bias
        return x + _along(b, self.axis, x.dim())


class PReLU(nn.Module):
    """Caffe's PReLU: ``max(x, 0) + a_c * min(x, 0)``, one slope per channel or one shared."""

    def __init__(self, shape: Sequence[int]):
        super().__init__()
        self.weight = nn.Parameter(torch.full(tuple(shape), 0.25))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        slope = self.weight
        if slope.dim() == 1:
            slope = _along(slope, 1, x.dim())
        return F.relu(x) + slope * torch.clamp(x, max=0)


class Power(nn.Module):
    """Caffe's Power: ``(shift + scale * x) ^ power``, a constant when ``power * scale == 0``."""

    def __init__(self, power: float, scale: float, shift: float):
        super().__init__()
        self.power, self.scale, self.shift = power, scale, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.power * self.scale == 0:
            value = 1.0 if self.power == 0 else math.pow(self.shift, self.power)
            return torch.full_like(x, value)
        y = x
        if self.scale != 1:
            y = y * self.scale
        if self.shift != 0:
            y = y + self.shift
        if self.power != 1:
            y = y.pow(self.power)
        return y


class AbsVal(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.abs(x)


class Pooling(nn.Module):
    """Caffe's MAX/AVE pooling with its output size rule and AVE divisor.

    The geometry is computed from the input's shape at run time with ``pool_geometry``.
    When torch's pooling gives exactly Caffe's windows (same output size, pad at most half
    the kernel) it is used directly: ``ceil_mode`` follows ``round_mode`` and AVE uses
    ``count_include_pad=True``, whose divisor is Caffe's (window clipped to ``in + pad``).
    Otherwise the input is padded (or cropped) explicitly to span exactly Caffe's windows:
    this reproduces Caffe's extra ceil-mode row of empty windows when pad is 0 and the stride
    exceeds the kernel, where Caffe gives -FLT_MAX (MAX) and 0 / divisor, i.e. NaN or -0
    (AVE).
    """

    def __init__(self, param: caffe_pb2.PoolingParameter, where: str):
        super().__init__()
        if param.pool not in (param.MAX, param.AVE):
            name = caffe_pb2.PoolingParameter.PoolMethod.Name(param.pool)
            raise ConverterError(f"{where}: pooling method {name} is not supported (MAX, AVE)")
        self.param_bytes = param.SerializeToString()  # protobuf messages do not pickle
        self.is_max = param.pool == param.MAX
        self.where = where

    def extra_repr(self) -> str:
        param = caffe_pb2.PoolingParameter.FromString(self.param_bytes)
        return text_format.MessageToString(param, as_one_line=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2], x.shape[-1]
        param = caffe_pb2.PoolingParameter.FromString(self.param_bytes)
        geo = pool_geometry(param, height, width, self.where)
        ceil = param.round_mode == param.CEIL
        sizes = (height, width)
        torch_out = [
            _torch_pool_size(n, k, s, p, ceil)
            for n, k, s, p in zip(sizes, geo.kernel, geo.stride, geo.pad)
        ]
        fits = all(2 * p <= k for k, p in zip(geo.kernel, geo.pad))
        if fits and tuple(torch_out) == geo.output:
            if self.is_max:
                return F.max_pool2d(x, geo.kernel, geo.stride, geo.pad, ceil_mode=ceil)
            return F.avg_pool2d(
                x, geo.kernel, geo.stride, geo.pad, ceil_mode=ceil, count_include_pad=True
            )
        return self._explicit(x, geo)

    def _explicit(self, x: torch.Tensor, geo) -> torch.Tensor:
        sizes = (x.shape[-2], x.shape[-1])
        # Extent of Caffe's windows from -pad: (out - 1) * stride + kernel per axis.
        right = [
            (o - 1) * s + k - p - n
            for n, k, s, p, o in zip(sizes, geo.kernel, geo.stride, geo.pad, geo.output)
        ]
        x = x[..., : sizes[0] + min(right[0], 0), : sizes[1] + min(right[1], 0)]
        padding = (geo.pad[1], max(right[1], 0), geo.pad[0], max(right[0], 0))
        if self.is_max:
            # Pads never win against real values; a window of pads alone gives -FLT_MAX.
            padded = F.pad(x, padding, value=-_FLT_MAX)
            return F.max_pool2d(padded, geo.kernel, geo.stride)
        padded = F.pad(x, padding, value=0.0)
        total = F.avg_pool2d(padded, geo.kernel, geo.stride, divisor_override=1)
        divisor = [
            _ave_divisor(n, k, s, p, o, x.device)
            for n, k, s, p, o in zip(sizes, geo.kernel, geo.stride, geo.pad, geo.output)
        ]
        return total / (divisor[0][:, None] * divisor[1][None, :]).to(x.dtype)


def _torch_pool_size(size: int, kernel: int, stride: int, pad: int, ceil: bool) -> int:
    """Output length torch's pooling gives (it drops a last window starting past in + pad)."""
    span = size + 2 * pad - kernel
    out = (-(-span // stride) if ceil else span // stride) + 1
    if ceil and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _ave_divisor(size: int, kernel: int, stride: int, pad: int, out: int, device) -> torch.Tensor:
    """Caffe's AVE pool size along one axis: ``min(start + k, in + pad) - start`` per window."""
    starts = torch.arange(out, device=device) * stride - pad
    return torch.clamp(starts + kernel, max=size + pad) - starts


class Eltwise(nn.Module):
    """Caffe's Eltwise: SUM (with optional coefficients), PROD or MAX of its inputs."""

    def __init__(self, operation: str, coeff: Sequence[float]):
        super().__init__()
        self.operation = operation
        self.coeff = [float(c) for c in coeff]

    def extra_repr(self) -> str:
        return self.operation + (f", coeff={self.coeff}" if self.coeff else "")

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if self.operation == "PROD":
            y = xs[0]
            for x in xs[1:]:
                y = y * x
            return y
        if self.operation == "MAX":
            y = xs[0]
            for x in xs[1:]:
                y = torch.maximum(y, x)
            return y
        coeff = self.coeff or [1.0] * len(xs)
        y = xs[0] if coeff[0] == 1 else xs[0] * coeff[0]
        for x, c in zip(xs[1:], coeff[1:]):
            y = y + x if c == 1 else y + x * c
        return y


class Concat(nn.Module):
    def __init__(self, axis: int):
        super().__init__()
        self.axis = axis

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=self.axis)


class Slice(nn.Module):
    """Caffe's Slice: ``slice_point`` boundaries along ``axis``, or equal parts."""

    def __init__(self, param: caffe_pb2.SliceParameter, axis: int, n_tops: int):
        super().__init__()
        self.param_bytes = param.SerializeToString()  # protobuf messages do not pickle
        self.axis = axis
        self.n_tops = n_tops

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        param = caffe_pb2.SliceParameter.FromString(self.param_bytes)
        bounds = slice_bounds(param, x.shape[self.axis], self.n_tops)
        return tuple(x.narrow(self.axis, a, b - a) for a, b in bounds)


class Split(nn.Module):
    def __init__(self, n_tops: int):
        super().__init__()
        self.n_tops = n_tops

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (x,) * self.n_tops


class Flatten(nn.Module):
    """Caffe's Flatten: merge axes ``axis..end_axis`` (inclusive) into one."""

    def __init__(self, axis: int, end_axis: int):
        super().__init__()
        self.axis, self.end_axis = axis, end_axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(self.axis, self.end_axis)


class Reshape(nn.Module):
    """Caffe's Reshape (``0`` copies an input axis, ``-1`` is inferred), shape from the input."""

    def __init__(self, param: caffe_pb2.ReshapeParameter, where: str):
        super().__init__()
        self.param_bytes = param.SerializeToString()  # protobuf messages do not pickle
        self.where = where

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        param = caffe_pb2.ReshapeParameter.FromString(self.param_bytes)
        return x.reshape(reshape_shape(param, tuple(x.shape), self.where))


class LRN(nn.Module):
    """Caffe's local response normalisation, across channels or within a channel."""

    def __init__(self, param: caffe_pb2.LRNParameter, where: str):
        super().__init__()
        if param.local_size % 2 == 0:
            raise ConverterError(f"{where}: LRN local_size must be odd, found {param.local_size}")
        self.size = param.local_size
        self.alpha, self.beta, self.k = param.alpha, param.beta, param.k
        self.across = param.norm_region == param.ACROSS_CHANNELS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = (self.size - 1) // 2
        square = x * x
        if self.across:
            # scale = k + alpha / n * (sum of squares over n neighbouring channels)
            padded = F.pad(square, (0, 0, 0, 0, half, half))
            channels = x.shape[1]
            total = padded[:, 0:channels]
            for i in range(1, self.size):
                total = total + padded[:, i : i + channels]
            scale = self.k + (self.alpha / self.size) * total
        else:
            # Caffe builds this from AVE pooling (pad included) and Power with shift 1.
            mean = F.avg_pool2d(square, self.size, 1, half, count_include_pad=True)
            scale = 1.0 + self.alpha * mean
        return x * scale.pow(-self.beta)


# ----------------------------------------------------------------------------- the graph


@dataclass(frozen=True)
class _Step:
    module: str
    type: str
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    each_bottom: bool  # a Convolution applies its weights to every bottom separately
    aliases: tuple[tuple[str, tuple[str, ...]], ...]  # in-place top -> blobs sharing its data


class CaffeGraph(nn.Module):
    """A Caffe net as a module: one submodule per layer, run in Caffe's order.

    Build it with ``from_net`` (structure and weights from a ``Net``) or ``from_config``
    (structure only, then ``load_state_dict``). ``forward(*inputs)`` takes one tensor per
    net input (``input_names`` order) and returns the blob ``output_name``.
    """

    def __init__(self, net: Net, input_shapes: Mapping[str, Sequence[int]] | None = None):
        super().__init__()
        _check_supported(net)
        shapes = net.shapes(input_shapes)
        blob_shapes: dict[str, tuple[int, ...]] = {}
        self.input_names: list[str] = list(net.input_shapes())
        self.input_shapes = {
            name: tuple(int(d) for d in (input_shapes or {}).get(name, shape))
            for name, shape in net.input_shapes().items()
        }
        outputs = net.outputs()
        self.output_name: str = outputs[-1] if outputs else net.layers[-1].tops[-1]
        self.module_names: dict[str, str] = {}
        self._prototxt = _definition_text(net)
        # Set before the layers are added so that no module name can take these attributes.
        self._steps: list[_Step] = []
        self._blob_names = set(net.blob_names())
        self._release: dict[int, list[str]] = {}
        groups = _sharing_groups(net)
        steps = []
        produced: set[str] = set()
        for layer, layer_shapes in zip(net.layers, shapes):
            where = f"{net.source}: layer '{layer.name}' ({layer.type})"
            in_place = _check_tops(layer, produced, where)
            bottom_shapes = [blob_shapes[b] for b in layer.bottoms]
            module = _build_module(layer, bottom_shapes, where)
            name = self._unique_name(layer.name)
            self.module_names[layer.name] = name
            self.add_module(name, module)
            aliases = tuple(
                (top, tuple(b for b in groups.get(top, ()) if b != top)) for top in in_place
            )
            steps.append(
                _Step(
                    name,
                    layer.type,
                    tuple(layer.bottoms),
                    tuple(layer.tops),
                    layer.type in ("Convolution", "Deconvolution") and len(layer.bottoms) > 1,
                    tuple(a for a in aliases if a[1]),
                )
            )
            produced.update(layer.tops)
            blob_shapes.update(zip(layer.tops, layer_shapes.top_shapes))
        self._steps = steps
        self._release = _release_points(steps)
        self.eval()

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_net(cls, net: Net) -> CaffeGraph:
        """Structure from ``net``'s layers; weights from their blobs where present."""
        model = cls(net)
        model.load_state_dict(owned_tensors(graph_arrays(model, net)), strict=False)
        return model

    @classmethod
    def from_config(cls, config: Mapping) -> CaffeGraph:
        """Rebuild the structure from ``caffe_config()``; weights come from ``load_state_dict``."""
        if config.get("architecture") != "generic":
            raise ConverterError(
                f"<config>: expected architecture 'generic', found {config.get('architecture')!r}"
            )
        if not isinstance(config.get("prototxt"), str):
            raise ConverterError("<config>: the 'prototxt' entry (the net definition) is missing")
        net = net_from_param(parse_prototxt(config["prototxt"], "<config>"), "<config>")
        return cls(net, config.get("input_shapes"))

    def caffe_config(self) -> dict:
        """JSON-serialisable description from which ``from_config`` rebuilds this module."""
        return {
            "architecture": "generic",
            "prototxt": self._prototxt,
            "input_shapes": {name: list(shape) for name, shape in self.input_shapes.items()},
            "input_names": list(self.input_names),
            "output_name": self.output_name,
            "module_names": dict(self.module_names),
        }

    def _unique_name(self, caffe_name: str) -> str:
        base = re.sub(r"[^0-9A-Za-z_]", "_", caffe_name) or "layer"
        if base[0].isdigit():
            base = "layer_" + base
        taken = set(self._modules) | set(dir(self)) | {"training"}
        name, index = base, 1
        while name in taken or keyword.iskeyword(name):
            index += 1
            name = f"{base}_{index}"
        return name

    # ------------------------------------------------------------------ running

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """The value Caffe's ``net.forward()`` gives for ``output_name``."""
        return self._run(inputs, {self.output_name})[self.output_name]

    def forward_blobs(
        self, *inputs: torch.Tensor, names: Sequence[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """Every blob (or those in ``names``) as Caffe holds it after the forward pass."""
        if names is not None:
            unknown = [n for n in names if n not in self._blob_names]
            if unknown:
                raise KeyError(f"no blob(s) named {unknown} in this net")
        blobs = self._run(inputs, None if names is None else set(names))
        return blobs if names is None else {n: blobs[n] for n in names}

    def _run(self, inputs: Sequence[torch.Tensor], keep: set[str] | None) -> dict:
        if len(inputs) != len(self.input_names):
            raise TypeError(
                f"the net takes {len(self.input_names)} input(s) {self.input_names}, "
                f"got {len(inputs)}"
            )
        given = dict(zip(self.input_names, inputs))
        blobs: dict[str, torch.Tensor] = {}
        for index, step in enumerate(self._steps):
            module = self._modules[step.module]
            if step.type == "Input":
                outs = module(*[given[t] for t in step.tops])
            elif step.each_bottom:
                outs = [module(blobs[b]) for b in step.bottoms]
            else:
                outs = module(*[blobs[b] for b in step.bottoms])
            if isinstance(outs, torch.Tensor):
                outs = (outs,)
            blobs.update(zip(step.tops, outs))
            for top, shared in step.aliases:
                for other in shared:
                    if other in blobs:
                        blobs[other] = blobs[top].reshape(blobs[other].shape)
            if keep is not None:
                for name in self._release.get(index, ()):
                    if name not in keep:
                        del blobs[name]
        return blobs


def _release_points(steps: list[_Step]) -> dict[int, list[str]]:
    """Layer index -> blobs that no later layer reads or writes (freed early by ``forward``)."""
    last: dict[str, int] = {}
    for index, step in enumerate(steps):
        for name in step.bottoms + step.tops:
            last[name] = index
    by_index: dict[int, list[str]] = {}
    for name, index in last.items():
        by_index.setdefault(index, []).append(name)
    return by_index


def _check_supported(net: Net) -> None:
    unsupported: dict[str, list[str]] = {}
    for layer in net.layers:
        if layer.type not in SUPPORTED_LAYER_TYPES:
            unsupported.setdefault(layer.type, []).append(layer.name)
    if unsupported:
        listed = "; ".join(
            f"{t} (layer{'s' if len(names) > 1 else ''} {', '.join(repr(n) for n in names)})"
            for t, names in unsupported.items()
        )
        raise ConverterError(
            f"{net.source}: {sum(map(len, unsupported.values()))} layer(s) of unsupported "
            f"type: {listed}. Supported types: {', '.join(supported_layer_types())}"
        )


def _check_tops(layer: Layer, produced: set[str], where: str) -> list[str]:
    """The tops this layer writes in place; refuses what Caffe refuses or computes wrongly."""
    in_place = []
    for index, top in enumerate(layer.tops):
        if index < len(layer.bottoms) and layer.bottoms[index] == top:
            in_place.append(top)
        elif top in produced or top in layer.tops[:index]:
            raise ConverterError(f"{where}: top blob '{top}' is produced by multiple sources")
    if in_place and layer.type not in _IN_PLACE_TYPES:
        raise ConverterError(
            f"{where}: computing in place (top '{in_place[0]}' == bottom) is not supported "
            f"for this type; in-place types: {', '.join(sorted(_IN_PLACE_TYPES))}"
        )
    return in_place


def _sharing_groups(net: Net) -> dict[str, tuple[str, ...]]:
    """Blob name -> all blobs sharing its memory in Caffe (ShareData in Reshape methods)."""
    group_of: dict[str, set[str]] = {}

    def join(a: str, b: str) -> None:
        merged = group_of.get(a, {a}) | group_of.get(b, {b})
        for name in merged:
            group_of[name] = merged

    for layer in net.layers:
        shares = layer.type in ("Split", "Flatten", "Reshape")
        shares |= layer.type == "Concat" and len(layer.bottoms) == 1
        shares |= layer.type == "Slice" and len(layer.tops) == 1
        if shares and layer.bottoms:
            for top in layer.tops:
                join(layer.bottoms[0], top)
    return {name: tuple(sorted(group)) for name, group in group_of.items()}


def _definition_text(net: Net) -> str:
    """The TEST-phase net as prototxt text, without blobs or include/exclude rules."""
    param = caffe_pb2.NetParameter(name=net.name)
    for layer in net.layers:
        lp = param.layer.add()
        lp.CopyFrom(layer.param)
        del lp.blobs[:]
        lp.ClearField("include")
        lp.ClearField("exclude")
    return text_format.MessageToString(param)


def _build_module(layer: Layer, bottoms: list[tuple[int, ...]], where: str) -> nn.Module:
    t, p = layer.type, layer.param
    if t == "Input":
        return CaffeInput()
    if t in ("Convolution", "Deconvolution"):
        return _conv_module(p.convolution_param, bottoms[0], where, t == "Deconvolution")
    if t == "InnerProduct":
        ip = p.inner_product_param
        axis = canonical_axis(ip.axis, len(bottoms[0]), where)
        k = math.prod(bottoms[0][axis:])
        shape = (k, ip.num_output) if ip.transpose else (ip.num_output, k)
        return InnerProduct(axis, shape, ip.bias_term, ip.transpose)
    if t == "BatchNorm":
        if len(bottoms[0]) < 2:
            raise ConverterError(f"{where}: BatchNorm needs an input with a channel axis")
        bp = p.batch_norm_param
        use_global = bp.use_global_stats if bp.HasField("use_global_stats") else True
        return BatchNorm(bottoms[0][1], bp.eps, use_global)
    if t in ("Scale", "Bias"):
        return _scale_module(layer, bottoms, where)
    if t == "ReLU":
        slope = p.relu_param.negative_slope
        return nn.LeakyReLU(slope) if slope != 0 else nn.ReLU()
    if t == "PReLU":
        channels = bottoms[0][1] if len(bottoms[0]) > 1 else 1
        return PReLU(() if p.prelu_param.channel_shared else (channels,))
    if t == "Sigmoid":
        return nn.Sigmoid()
    if t == "TanH":
        return nn.Tanh()
    if t == "Power":
        pp = p.power_param
        return Power(pp.power, pp.scale, pp.shift)
    if t == "AbsVal":
        return AbsVal()
    if t == "Pooling":
        return Pooling(p.pooling_param, where)
    if t == "Eltwise":
        ep = p.eltwise_param
        return Eltwise(caffe_pb2.EltwiseParameter.EltwiseOp.Name(ep.operation), ep.coeff)
    if t == "Concat":
        cp = p.concat_param
        axis_value = cp.concat_dim if cp.HasField("concat_dim") else cp.axis
        return Concat(canonical_axis(axis_value, len(bottoms[0]), where))
    if t == "Slice":
        sp = p.slice_param
        axis_value = sp.slice_dim if sp.HasField("slice_dim") else sp.axis
        return Slice(sp, canonical_axis(axis_value, len(bottoms[0]), where), len(layer.tops))
    if t == "Split":
        return Split(len(layer.tops))
    if t == "Flatten":
        fp = p.flatten_param
        ndim = len(bottoms[0])
        return Flatten(
            canonical_axis(fp.axis, ndim, where), canonical_axis(fp.end_axis, ndim, where)
        )
    if t == "Reshape":
        return Reshape(p.reshape_param, where)
    if t == "Dropout":
        return nn.Identity()  # TEST phase: Caffe copies the input, no rescaling
    if t == "Softmax":
        return nn.Softmax(dim=canonical_axis(p.softmax_param.axis, len(bottoms[0]), where))
    if t == "LRN":
        if len(bottoms[0]) != 4:
            raise ConverterError(f"{where}: LRN needs a 4-D input, found {bottoms[0]}")
        return LRN(p.lrn_param, where)
    raise ConverterError(f"{where}: layer type '{t}' is not supported")  # pragma: no cover


def _conv_module(cp, shape: tuple[int, ...], where: str, deconv: bool) -> nn.Module:
    axis = canonical_axis(cp.axis, len(shape), where)
    spatial = len(shape) - axis - 1
    if axis != 1 or spatial not in (1, 2, 3):
        raise ConverterError(
            f"{where}: only channel axis 1 with 1 to 3 spatial axes is supported, "
            f"found axis {cp.axis} on a {len(shape)}-D input"
        )
    kernel, stride, pad, dilation = conv_geometry(cp, spatial, where)
    kind = (
        (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
        if deconv
        else (nn.Conv1d, nn.Conv2d, nn.Conv3d)
    )[spatial - 1]
    return kind(
        shape[1],
        cp.num_output,
        tuple(kernel),
        stride=tuple(stride),
        padding=tuple(pad),
        dilation=tuple(dilation),
        groups=cp.group,
        bias=cp.bias_term,
    )


def _scale_module(layer: Layer, bottoms: list[tuple[int, ...]], where: str) -> nn.Module:
    shape = bottoms[0]
    sp = layer.param.scale_param if layer.type == "Scale" else layer.param.bias_param
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


def graph_arrays(model: CaffeGraph, net: Net) -> dict[str, np.ndarray]:
    """The state dict of ``model`` (built from ``net``) as arrays taken from the net's blobs.

    Raw blobs stay float32 views of the caffemodel (nothing is copied); BatchNorm statistics
    are divided by the stored scale factor in float64, so a float64 model carries them
    exactly and a float32 one rounds them once.
    """
    arrays: dict[str, np.ndarray] = {}
    for layer in net.layers:
        if not layer.blobs:
            continue
        name = model.module_names[layer.name]
        module = model.get_submodule(name)
        where = f"{net.weights_source or net.source}: layer '{layer.name}' ({layer.type})"
        blobs = layer.blobs
        if layer.type == "BatchNorm":
            stored = float(blobs[2].reshape(-1)[0]) if len(blobs) > 2 else 1.0
            factor = 0.0 if stored == 0 else 1.0 / stored  # Caffe's zero guard
            arrays[f"{name}.running_mean"] = blobs[0].reshape(-1).astype(np.float64) * factor
            arrays[f"{name}.running_var"] = blobs[1].reshape(-1).astype(np.float64) * factor
            continue
        targets = [
            (key, tensor)
            for key in ("weight", "bias")
            if (tensor := getattr(module, key, None)) is not None
        ]
        if len(targets) != len(blobs):
            raise ConverterError(
                f"{where}: expected {len(targets)} blob(s), the weights have {len(blobs)}"
            )
        for (key, target), blob in zip(targets, blobs):
            if blob.size != target.numel():
                raise ConverterError(
                    f"{where}: blob of shape {tuple(blob.shape)} does not fit {tuple(target.shape)}"
                )
            arrays[f"{name}.{key}"] = blob.reshape(tuple(target.shape))
    return arrays
