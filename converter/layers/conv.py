"""Convolution, Deconvolution and InnerProduct: shape rules, modules and weights.

Caffe: ``src/caffe/layers/base_conv_layer.cpp`` (geometry, ``group``, several bottom/top
pairs sharing one set of weights), ``conv_layer.cpp``, ``deconv_layer.cpp``,
``inner_product_layer.cpp``.

Two forks' depthwise convolutions are Convolution under other names:
``DepthwiseConvolution`` (yonghenglh6/DepthwiseConvolution ``depthwise_conv_layer.cpp``)
subclasses ConvolutionLayer and runs its CPU forward, so it is Convolution with the
prototxt's ``num_output`` and ``group``; ``ConvolutionDepthwise``
(farmingyard/caffe-mobilenet ``conv_dw_layer.cpp``) is its own layer that ignores
``num_output`` and ``group``: one (kh, kw) filter per input channel, weight
``(C, 1, kh, kw)``, bias ``(C,)``, as many outputs as inputs, 4-D blobs only.
"""

from __future__ import annotations

import math

from converter import caffe_pb2
from converter.codegen.common import literal
from converter.errors import ConverterError
from converter.layers.registry import (
    LayerCode,
    LayerShapes,
    Shape,
    canonical_axis,
    need_bottoms,
    register_layer,
)


def conv_geometry(cp: caffe_pb2.ConvolutionParameter, spatial: int, where: str):
    """(kernel, stride, pad, dilation) per spatial axis, by Caffe's rules for repeated values
    and for the ``_h``/``_w`` fields (``base_conv_layer.cpp``, ``LayerSetUp``); raises
    ``ConverterError`` starting with ``where`` for what Caffe refuses."""

    def expand(field: str, name: str | None, default: int) -> list[int]:
        """``field`` (repeated: once for every axis, or once per axis) or, where ``name`` is
        given, ``name_h`` and ``name_w``."""
        values = list(getattr(cp, field))
        h, w = (f"{name}_h", f"{name}_w") if name else (None, None)
        if name and (cp.HasField(h) or cp.HasField(w)):
            if spatial != 2:
                raise ConverterError(f"{where}: {h}/{w} need 2 spatial axes")
            if values:
                raise ConverterError(f"{where}: give either {field} or {h}/{w}, not both")
            if cp.HasField(h) != cp.HasField(w) and name != "pad":
                # Caffe then reads the unset one as 0 (its proto default), a kernel or
                # stride it refuses (or divides by); a missing pad is 0 and fine.
                given, missing = (h, w) if cp.HasField(h) else (w, h)
                raise ConverterError(
                    f"{where}: convolution_param gives {given} without {missing}, which Caffe "
                    f"then takes as 0; give both (or {field} alone)"
                )
            return [getattr(cp, h), getattr(cp, w)]
        if not values:
            return [default] * spatial
        if len(values) == 1:
            return values * spatial
        if len(values) != spatial:
            raise ConverterError(
                f"{where}: {field} has {len(values)} values for {spatial} spatial axes"
            )
        return values

    kernel = expand("kernel_size", "kernel", 0)
    stride = expand("stride", "stride", 1)
    pad = expand("pad", "pad", 0)
    dilation = expand("dilation", None, 1)
    if any(k <= 0 for k in kernel):
        raise ConverterError(f"{where}: kernel size must be positive, found {kernel}")
    if any(s <= 0 for s in stride) or any(d <= 0 for d in dilation):
        raise ConverterError(f"{where}: stride and dilation must be positive")
    return kernel, stride, pad, dilation


# ----------------------------------------------------------------------------- Convolution


def conv_channels(layer, channels: int) -> tuple[int, int]:
    """(num_output, group) a convolution layer computes with for ``channels`` inputs: the
    prototxt's, except for the fork type ConvolutionDepthwise, which always computes one
    output per input channel (see the module docstring)."""
    if layer.type == "ConvolutionDepthwise":
        return channels, channels
    cp = layer.param.convolution_param
    return cp.num_output, cp.group


def _conv_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    cp = layer.param.convolution_param
    deconv = layer.type == "Deconvolution"
    need_bottoms(bottoms, (1, 1 << 30), where)
    shape = bottoms[0]
    axis = canonical_axis(cp.axis, len(shape), where)
    spatial = len(shape) - axis - 1
    if layer.type == "ConvolutionDepthwise" and (axis != 1 or spatial != 2):
        raise ConverterError(f"{where}: ConvolutionDepthwise needs a 4-D input, found {shape}")
    kernel, stride, pad, dilation = conv_geometry(cp, spatial, where)
    channels = shape[axis]
    n_out, group = conv_channels(layer, channels)
    if n_out <= 0:  # base_conv_layer.cpp, LayerSetUp: CHECK_GT(num_output_, 0)
        raise ConverterError(f"{where}: num_output must be positive, found {n_out}")
    for index, other in enumerate(bottoms[1:], 1):  # Reshape: one geometry for every pair
        if other != shape:
            raise ConverterError(
                f"{where}: bottom {index} has shape {other}, bottom 0 {shape}; every bottom "
                "of a convolution must have the same shape"
            )
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


def _conv_spec(layer, bottoms: list[Shape], where: str):
    """(torch class name, input channels, outputs, groups, (kernel, stride, pad, dilation))."""
    cp = layer.param.convolution_param
    shape = bottoms[0]
    axis = canonical_axis(cp.axis, len(shape), where)
    spatial = len(shape) - axis - 1
    if axis != 1 or spatial not in (1, 2, 3):
        raise ConverterError(
            f"{where}: only channel axis 1 with 1 to 3 spatial axes is supported, "
            f"found axis {cp.axis} on a {len(shape)}-D input"
        )
    kind = ("ConvTranspose" if layer.type == "Deconvolution" else "Conv") + f"{spatial}d"
    n_out, group = conv_channels(layer, shape[1])
    return kind, shape[1], n_out, group, conv_geometry(cp, spatial, where)


def _conv_module(layer, bottoms: list[Shape], where: str):
    from torch import nn

    kind, channels, n_out, group, (kernel, stride, pad, dilation) = _conv_spec(
        layer, bottoms, where
    )
    return getattr(nn, kind)(
        channels,
        n_out,
        tuple(kernel),
        stride=tuple(stride),
        padding=tuple(pad),
        dilation=tuple(dilation),
        groups=group,
        bias=layer.param.convolution_param.bias_term,
    )


def _conv_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    kind, channels, n_out, group, (kernel, stride, pad, dilation) = _conv_spec(
        layer, bottoms, where
    )
    args = [str(channels), str(n_out), literal(kernel)]
    for name, values, default in (("stride", stride, 1), ("padding", pad, 0)):
        if any(v != default for v in values):
            args.append(f"{name}={literal(values)}")
    if any(d != 1 for d in dilation):
        args.append(f"dilation={literal(dilation)}")
    if group != 1:
        args.append(f"groups={group}")
    if not layer.param.convolution_param.bias_term:
        args.append("bias=False")
    return LayerCode("{m}({0})", f"nn.{kind}({', '.join(args)})")


# Blob 0 is (out, in / group, kernel...) for Convolution and (in, out / group, kernel...) for
# Deconvolution: the layouts torch's Conv and ConvTranspose use, so the default mapping fits.
register_layer(
    "Convolution",
    shape=_conv_shapes,
    module=_conv_module,
    per_bottom=True,
    aliases=("DepthwiseConvolution", "ConvolutionDepthwise"),
    code=_conv_code,
)
register_layer(
    "Deconvolution", shape=_conv_shapes, module=_conv_module, per_bottom=True, code=_conv_code
)


# ----------------------------------------------------------------------------- InnerProduct


def _inner_product_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    need_bottoms(bottoms, 1, where)
    ip = layer.param.inner_product_param
    axis = canonical_axis(ip.axis, len(bottoms[0]), where)
    k = math.prod(bottoms[0][axis:])
    n = ip.num_output
    # Caffe fills every learned blob when it builds the net, even one a caffemodel then
    # overwrites, and its fillers refuse an empty blob (filler.hpp: CHECK(count))
    filler = "Caffe's weight filler refuses the empty weight blob when it builds the net"
    if n == 0:
        raise ConverterError(f"{where}: num_output must be positive, found 0 ({filler})")
    if k == 0:
        raise ConverterError(
            f"{where}: the input {bottoms[0]} holds no values from axis {axis} on ({filler})"
        )
    params = [(k, n) if ip.transpose else (n, k)] + ([(n,)] if ip.bias_term else [])
    return LayerShapes([bottoms[0][:axis] + (n,)], params)


def _inner_product_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.conv import InnerProduct

    ip = layer.param.inner_product_param
    axis = canonical_axis(ip.axis, len(bottoms[0]), where)
    k = math.prod(bottoms[0][axis:])
    shape = (k, ip.num_output) if ip.transpose else (ip.num_output, k)
    return InnerProduct(axis, shape, ip.bias_term, ip.transpose)


_TRANSPOSED_LINEAR = '''
class TransposedLinear(nn.Module):
    """Caffe's InnerProduct with ``transpose: true``: the weight is stored (in, out)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.t(), self.bias)
'''


def _inner_product_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    ip = layer.param.inner_product_param
    axis = canonical_axis(ip.axis, len(bottoms[0]), where)
    k = math.prod(bottoms[0][axis:])
    bias = "" if ip.bias_term else ", bias=False"
    # Caffe flattens every axis from ``axis`` into one
    call = "{m}({0})" if axis == len(bottoms[0]) - 1 else f"{{m}}({{0}}.flatten({axis}))"
    if ip.transpose:
        return LayerCode(
            call, f"TransposedLinear({k}, {ip.num_output}{bias})", (_TRANSPOSED_LINEAR,)
        )
    return LayerCode(call, f"nn.Linear({k}, {ip.num_output}{bias})")


register_layer(
    "InnerProduct",
    shape=_inner_product_shapes,
    module=_inner_product_module,
    code=_inner_product_code,
)


# ----------------------------------------------------------------------------- Embed


def _embed_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    """Top: the bottom's shape plus ``num_output``; blobs W (input_dim, num_output), b."""
    need_bottoms(bottoms, 1, where)
    ep = layer.param.embed_param
    if ep.input_dim < 1 or ep.num_output < 1:
        raise ConverterError(f"{where}: Embed needs positive input_dim and num_output")
    params = [(ep.input_dim, ep.num_output)] + ([(ep.num_output,)] if ep.bias_term else [])
    return LayerShapes([bottoms[0] + (ep.num_output,)], params)


def _embed_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.conv import Embed

    ep = layer.param.embed_param
    return Embed(ep.input_dim, ep.num_output, ep.bias_term)


_EMBED = '''
class CaffeEmbed(nn.Module):
    """Caffe's Embed: row ``int(x)`` of ``weight`` (input_dim, num_output), plus
    ``bias``; the input holds indices as numbers (truncated, as C++'s int cast)."""

    def __init__(self, input_dim: int, num_output: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(input_dim, num_output))
        self.bias = nn.Parameter(torch.zeros(num_output)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.embedding(x.long(), self.weight)
        return y if self.bias is None else y + self.bias
'''


def _embed_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    ep = layer.param.embed_param
    bias = "" if ep.bias_term else ", bias=False"
    return LayerCode("{m}({0})", f"CaffeEmbed({ep.input_dim}, {ep.num_output}{bias})", (_EMBED,))


register_layer("Embed", shape=_embed_shapes, module=_embed_module, code=_embed_code)
