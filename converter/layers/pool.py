"""Pooling: Caffe's output size rule, its windows and its AVE divisor.

Caffe: ``src/caffe/layers/pooling_layer.cpp`` (``Reshape``: the ceil rule and the clip of a
last window that would start in the padding; ``Forward_cpu``: the divisor).
"""

from __future__ import annotations

from dataclasses import dataclass

from converter import caffe_pb2
from converter.codegen.common import FLT_MAX_HELPER, literal
from converter.errors import ConverterError
from converter.layers.registry import (
    ExactPart,
    LayerCode,
    LayerShapes,
    Shape,
    need_bottoms,
    register_layer,
)


@dataclass
class PoolGeometry:
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int]
    output: tuple[int, int]


def _pool_pair(pp: caffe_pb2.PoolingParameter, name: str, where: str) -> tuple[int, int]:
    """``pad`` or ``stride`` of a Pooling layer as (h, w): ``name`` for both axes, or
    ``name_h`` with ``name_w``. Caffe's ``LayerSetUp`` (``pooling_layer.cpp``) refuses one of
    the pair without the other and the pair beside ``name``; so does this."""
    h, w = f"{name}_h", f"{name}_w"
    has_h, has_w = pp.HasField(h), pp.HasField(w)
    if not has_h and not has_w:
        return (getattr(pp, name),) * 2
    if has_h != has_w:
        given, missing = (h, w) if has_h else (w, h)
        raise ConverterError(
            f"{where}: pooling_param gives {given} without {missing}; Caffe's Pooling needs "
            f"both (or {name} alone)"
        )
    if pp.HasField(name):
        raise ConverterError(
            f"{where}: pooling_param gives both {name} and {h}/{w}; Caffe's Pooling takes one "
            "or the other"
        )
    return getattr(pp, h), getattr(pp, w)


def _pool_kernel(pp: caffe_pb2.PoolingParameter, height: int, width: int, where: str):
    """The kernel of a Pooling layer as (h, w), by the checks of Caffe's ``LayerSetUp``."""
    has_h, has_w = pp.HasField("kernel_h"), pp.HasField("kernel_w")
    if pp.global_pooling:
        given = [f for f in ("kernel_size", "kernel_h", "kernel_w") if pp.HasField(f)]
        if given:
            raise ConverterError(
                f"{where}: pooling_param gives {given[0]} with global_pooling, whose kernel is "
                "the input's size; Caffe's Pooling refuses both"
            )
        return height, width
    if pp.HasField("kernel_size"):
        if has_h and has_w:
            raise ConverterError(
                f"{where}: pooling_param gives both kernel_size and kernel_h/kernel_w; Caffe's "
                "Pooling takes one or the other"
            )
        # Caffe's checks let a lone kernel_h (or kernel_w) pass here, and it pools with
        # kernel_size: so does this.
        return pp.kernel_size, pp.kernel_size
    if has_h and has_w:
        return pp.kernel_h, pp.kernel_w
    if has_h or has_w:
        given, missing = ("kernel_h", "kernel_w") if has_h else ("kernel_w", "kernel_h")
        raise ConverterError(
            f"{where}: pooling_param gives {given} without {missing}; Caffe's Pooling needs "
            "both (or kernel_size)"
        )
    raise ConverterError(f"{where}: pooling needs kernel_size or kernel_h and kernel_w")


def pool_geometry(
    pp: caffe_pb2.PoolingParameter, height: int, width: int, where: str
) -> PoolGeometry:
    """Kernel, stride, pad and output size of a Pooling layer, exactly as Caffe computes them.

    ``height`` x ``width`` is the input plane. Raises ``ConverterError`` (starting with
    ``where``) for what Caffe's ``PoolingLayer::LayerSetUp`` refuses (``pooling_layer.cpp``):
    ``pad_h``/``stride_h``/``kernel_h`` without its ``_w`` (or the reverse), a pair beside
    its single field, a kernel beside ``global_pooling``, pad not below the kernel; and for
    a zero stride or an empty output, on which Caffe divides by zero or allocates nothing.
    """
    kernel = _pool_kernel(pp, height, width, where)
    pad = _pool_pair(pp, "pad", where)
    stride = _pool_pair(pp, "stride", where)
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


def pooling_mask(layer, where: str) -> bool:
    """Whether a Pooling layer has a second top, the mask of its MAX positions.

    Caffe allows it for MAX pooling only (``MaxTopBlobs``): the mask holds, per output,
    the flat index ``h * W + w`` in the input plane of the window's first maximum, or -1
    where no input value exceeded -FLT_MAX (``pooling_layer.cpp``). Unpooling layers
    (MaxUnPool, SegNet's Upsample) read it.
    """
    if len(layer.tops) == 1:
        return False
    if len(layer.tops) != 2 or layer.param.pooling_param.pool != caffe_pb2.PoolingParameter.MAX:
        raise ConverterError(
            f"{where}: pooling has {len(layer.tops)} tops; Caffe allows a second top (the "
            "mask) for MAX pooling only"
        )
    return True


def check_pool_method(param, where: str) -> None:
    """MAX or AVE, of a PoolingParameter or SPPParameter: STOCHASTIC is refused (Caffe's
    CPU forward is NOT_IMPLEMENTED for it, ``pooling_layer.cpp``; only its GPU one runs)."""
    if param.pool not in (param.MAX, param.AVE):
        name = type(param).PoolMethod.Name(param.pool)
        raise ConverterError(f"{where}: pooling method {name} is not supported (MAX, AVE)")


def _pooling_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    need_bottoms(bottoms, 1, where)
    if len(bottoms[0]) != 4:
        raise ConverterError(f"{where}: pooling needs a 4-D input, found {bottoms[0]}")
    check_pool_method(layer.param.pooling_param, where)
    n, c, h, w = bottoms[0]
    geometry = pool_geometry(layer.param.pooling_param, h, w, where)
    top = (n, c) + geometry.output
    return LayerShapes([top] * (2 if pooling_mask(layer, where) else 1), [])


def _pooling_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.pool import Pooling

    return Pooling(layer.param.pooling_param, where, mask=pooling_mask(layer, where))


_CAFFE_POOL = '''
class CaffePool2d(nn.Module):
    """Caffe's MAX/AVE pooling where torch's ceil_mode differs from it: Caffe keeps a
    last window that starts past the input when the stride exceeds the kernel, and drops
    one starting in the padding on both axes when either axis is padded. The input is
    padded (or cropped) to span exactly Caffe's windows; AVE divides by the window
    clipped to ``in + pad``, as Caffe does."""

    def __init__(self, kernel, stride, pad, mode: str, ceil: bool = True) -> None:
        super().__init__()
        self.kernel, self.stride, self.pad = kernel, stride, pad
        self.mode, self.ceil = mode, ceil

    def output_size(self, size: int, k: int, s: int, p: int) -> int:
        span = size + 2 * p - k
        return (-(-span // s) if self.ceil else span // s) + 1

    def windows(self, x: torch.Tensor, value: float) -> tuple[torch.Tensor, list[int]]:
        """``x`` padded with ``value`` (or cropped) to span Caffe's windows exactly, and
        the output size."""
        sizes = (x.shape[-2], x.shape[-1])
        geometry = list(zip(sizes, self.kernel, self.stride, self.pad))
        out = [self.output_size(*g) for g in geometry]
        if any(self.pad):
            out = [
                o - 1 if (o - 1) * s >= n + p else o
                for o, (n, _, s, p) in zip(out, geometry)
            ]
        right = [(o - 1) * s + k - p - n for o, (n, k, s, p) in zip(out, geometry)]
        x = x[..., : sizes[0] + min(right[0], 0), : sizes[1] + min(right[1], 0)]
        padding = (self.pad[1], max(right[1], 0), self.pad[0], max(right[0], 0))
        return F.pad(x, padding, value=value), out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "MAX":  # a window of padding alone gives -FLT_MAX, as in Caffe
            padded, _ = self.windows(x, -FLT_MAX)
            return F.max_pool2d(padded, self.kernel, self.stride)
        padded, out = self.windows(x, 0.0)
        total = F.avg_pool2d(padded, self.kernel, self.stride, divisor_override=1)
        divisors = []
        for o, n, k, s, p in zip(out, x.shape[-2:], self.kernel, self.stride, self.pad):
            starts = torch.arange(o, device=x.device) * s - p
            divisors.append(torch.clamp(starts + k, max=n + p) - starts)
        return total / (divisors[0][:, None] * divisors[1][None, :]).to(x.dtype)
'''

_MASK_POOL = '''
class CaffeMaxPool2dMask(CaffePool2d):
    """Caffe's MAX pooling with its second top, the mask: per output, the flat index
    ``h * W + w`` in the input plane of the window's first maximum, -1 where no value
    exceeded -FLT_MAX; a float blob, as in Caffe."""

    def __init__(self, kernel, stride, pad, ceil: bool = True) -> None:
        super().__init__(kernel, stride, pad, "MAX", ceil)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        padded, _ = self.windows(x, -FLT_MAX)
        pooled, index = F.max_pool2d_with_indices(padded, self.kernel, self.stride)
        rows = index // padded.shape[-1] - self.pad[0]
        cols = index % padded.shape[-1] - self.pad[1]
        mask = torch.where(pooled > -FLT_MAX, rows * x.shape[-1] + cols, -1)
        return pooled, mask.to(x.dtype)
'''


def _pooling_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    """torch's pooling where it computes Caffe's windows at every input size (stride at
    most the kernel, pad at most half of it), else ``CaffePool2d``; with a mask top,
    ``CaffeMaxPool2dMask``."""
    pp = layer.param.pooling_param
    mask = pooling_mask(layer, where)
    geo = pool_geometry(pp, bottoms[0][2], bottoms[0][3], where)
    mode = "MAX" if pp.pool == pp.MAX else "AVE"
    kind = "Max" if mode == "MAX" else "Avg"
    ceil = pp.round_mode != caffe_pb2.PoolingParameter.FLOOR
    if pp.global_pooling and not mask:
        return LayerCode(f"F.adaptive_{kind.lower()}_pool2d({{0}}, 1)")
    fits = all(s <= k and 2 * p <= k for k, s, p in zip(geo.kernel, geo.stride, geo.pad))
    if fits and not mask:
        args = [literal(geo.kernel), literal(geo.stride)]
        if any(geo.pad):
            args.append(literal(geo.pad))
        if ceil:
            args.append("ceil_mode=True")
        # AVE: count_include_pad (torch's default) divides by the window clipped to in + pad
        return LayerCode(f"F.{kind.lower()}_pool2d({{0}}, {', '.join(args)})")
    shape = ", ".join(f"({a}, {b})" for a, b in (geo.kernel, geo.stride, geo.pad))
    floor = "" if ceil else ", ceil=False"
    if mask:
        return LayerCode(
            "{m}({0})",
            f"CaffeMaxPool2dMask({shape}{floor})",
            (FLT_MAX_HELPER, _CAFFE_POOL, _MASK_POOL),
        )
    return LayerCode(
        "{m}({0})", f'CaffePool2d({shape}, "{mode}"{floor})', (FLT_MAX_HELPER, _CAFFE_POOL)
    )


register_layer(
    "Pooling",
    shape=_pooling_shapes,
    module=_pooling_module,
    code=_pooling_code,
    exact=lambda layer: {1: ExactPart("max positions")} if len(layer.tops) == 2 else {},
)

# ----------------------------------------------------------------------------- SPP


def spp_levels(sp: caffe_pb2.SPPParameter, height: int, width: int):
    """The PoolingParameter of each pyramid level, as Caffe's ``SPPLayer::GetPoolingParam``
    builds it (``spp_layer.cpp``): level ``l`` has ``bins = 2^l`` per axis, kernel
    ``ceil(size / bins)``, stride = kernel, pad ``(kernel * bins - size + 1) // 2``."""
    method = caffe_pb2.PoolingParameter.MAX
    if sp.pool == sp.AVE:
        method = caffe_pb2.PoolingParameter.AVE
    levels = []
    for level in range(sp.pyramid_height):
        bins = 2**level
        kernel = [-(-size // bins) for size in (height, width)]
        pad = [(k * bins - size + 1) // 2 for k, size in zip(kernel, (height, width))]
        levels.append(
            caffe_pb2.PoolingParameter(
                pool=method,
                kernel_h=kernel[0],
                kernel_w=kernel[1],
                stride_h=kernel[0],
                stride_w=kernel[1],
                pad_h=pad[0],
                pad_w=pad[1],
            )
        )
    return levels


def _spp_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    need_bottoms(bottoms, 1, where)
    if len(bottoms[0]) != 4:
        raise ConverterError(f"{where}: SPP needs a 4-D input, found {bottoms[0]}")
    sp = layer.param.spp_param
    check_pool_method(sp, where)
    if sp.pyramid_height < 1:
        raise ConverterError(f"{where}: pyramid_height must be at least 1")
    n, c, h, w = bottoms[0]
    outputs = [pool_geometry(p, h, w, where).output for p in spp_levels(sp, h, w)]
    if len(outputs) == 1:
        return LayerShapes([(n, c, *outputs[0])], [])
    return LayerShapes([(n, sum(c * oh * ow for oh, ow in outputs))], [])


def _spp_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.pool import SPP

    return SPP(layer.param.spp_param, where)


_SPP = '''
class CaffeSPP(nn.Module):
    """Caffe's spatial pyramid pooling: level ``l`` pools into ``2^l x 2^l`` bins with
    Caffe's pooling (kernel ``ceil(size / bins)``, stride = kernel, pad ``(kernel * bins
    - size + 1) // 2``); each level flattened and the levels concatenated, one level
    giving the pooled blob itself."""

    def __init__(self, levels: int, mode: str) -> None:
        super().__init__()
        self.levels, self.mode = levels, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = []
        for level in range(self.levels):
            bins = 2**level
            kernel = [-(-size // bins) for size in x.shape[-2:]]
            pad = [(k * bins - size + 1) // 2 for k, size in zip(kernel, x.shape[-2:])]
            pooled.append(CaffePool2d(kernel, kernel, pad, self.mode)(x))
        if len(pooled) == 1:
            return pooled[0]
        return torch.cat([level.flatten(1) for level in pooled], dim=1)
'''


def _spp_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    sp = layer.param.spp_param
    mode = "AVE" if sp.pool == sp.AVE else "MAX"  # the shape rule refuses STOCHASTIC
    return LayerCode(
        "{m}({0})", f'CaffeSPP({sp.pyramid_height}, "{mode}")', (FLT_MAX_HELPER, _CAFFE_POOL, _SPP)
    )


register_layer("SPP", shape=_spp_shapes, module=_spp_module, code=_spp_code)
