"""Layers that change the spatial grid, all from Caffe forks: Interp (DeepLab / PSPNet),
Upsample, BilinearInterpolate, Resize, PixelShuffle, Pad and the unpooling layers (MaxUnPool,
SegNet's Upsample).

Interp (DeepLab v2 and yjxiong/caffe ``src/caffe/layers/interp_layer.cpp``; the first
PSPNet version, hszhao/PSPNet ``src/caffe/interp_layer.cpp``; both resample with
``caffe_cpu_interp2`` of ``src/caffe/util/interp.cpp``) crops the input by ``pad_beg`` /
``pad_end`` (non-positive: cropping only) and resamples it bilinearly with aligned corners.

The others: inisis/caffe's ``upsample_layer.cpp``, ``bilinear_interpolate_layer.cpp``,
``resize_layer.cpp`` (+ ``util_img.cpp``), ``pixelshuffle_layer.cpp``, ``pad_layer.cpp``,
``maxunpool_layer.cpp`` (the rules, checked against that fork's outputs, are in
``tests/fixtures/fork_layers/case.json``); SegNet's ``upsample_layer.cpp``
(alexgkendall/caffe-segnet, also TimoSaemann/ENet's Caffe).

``Upsample`` names two different layers. inisis/caffe's repeats each value ``scale`` times
along H and W (one bottom). SegNet's and ENet's unpool: bottoms (x, mask), where the mask is
a MAX Pooling layer's second top, and every x value goes to the position its mask names in
a zero plane. One record serves both; ``upsample_form`` tells them apart by the bottoms and
fields the prototxt gives, and refuses a layer that mixes the two.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from converter import caffe_pb2
from converter.codegen.common import number
from converter.errors import ConverterError
from converter.layers.registry import LayerCode, LayerShapes, Shape, need_bottoms, register_layer


@dataclass(frozen=True)
class InterpSpec:
    """What an Interp layer computes, from its ``interp_param``.

    Output size, by the first rule that applies (DeepLab v2's order): ``shrink_factor``
    alone: ``(in - 1) // shrink + 1``; ``zoom_factor`` alone: ``in + (in - 1) * (zoom - 1)``;
    ``height`` and ``width``; both factors: shrink, then zoom. ``in`` is the cropped size
    ``in + pad_beg + pad_end``. With a second bottom (the first PSPNet version) the output
    takes that blob's height and width, and none of the above may be given.
    ``nearest``: the first PSPNet version's ``interp_type: "nearest_neighbor"``.
    """

    zoom: int | None
    shrink: int | None
    height: int | None
    width: int | None
    pad_beg: int
    pad_end: int
    nearest: bool

    def output_size(self, height: int, width: int, reference: Shape | None, where: str):
        """(cropped height, cropped width, output height, output width) for an input of
        ``height`` x ``width`` (and the second bottom's shape, if any); ConverterError
        where the fork's checks fail."""
        in_h, in_w = height + self.pad_beg + self.pad_end, width + self.pad_beg + self.pad_end
        explicit = self.height is not None and self.width is not None
        if reference is not None:
            if self.zoom is not None or self.shrink is not None or explicit:
                raise ConverterError(
                    f"{where}: with a second bottom the output size is that blob's; "
                    "zoom_factor, shrink_factor or height/width may not be given too"
                )
            if len(reference) > 4:
                raise ConverterError(
                    f"{where}: the second bottom has more than 4 axes: {reference}"
                )
            # Caffe's legacy height()/width(): axes 2 and 3, 1 where the blob has none.
            out_h, out_w = (tuple(reference) + (1, 1, 1, 1))[2:4]
        elif self.shrink is not None and self.zoom is None:
            out_h, out_w = _shrunk(in_h, self.shrink, where), _shrunk(in_w, self.shrink, where)
        elif self.zoom is not None and self.shrink is None:
            out_h, out_w = _zoomed(in_h, self.zoom, where), _zoomed(in_w, self.zoom, where)
        elif explicit:
            out_h, out_w = self.height, self.width
        elif self.zoom is not None and self.shrink is not None:
            out_h = _zoomed(_shrunk(in_h, self.shrink, where), self.zoom, where)
            out_w = _zoomed(_shrunk(in_w, self.shrink, where), self.zoom, where)
        else:
            raise ConverterError(
                f"{where}: interp_param gives no output size (zoom_factor, shrink_factor, "
                "height and width, or a second bottom)"
            )
        if min(in_h, in_w) <= 0 or min(out_h, out_w) <= 0:
            raise ConverterError(
                f"{where}: sizes must be positive: {height}x{width} cropped to {in_h}x{in_w}, "
                f"resized to {out_h}x{out_w}"
            )
        return in_h, in_w, out_h, out_w


def _shrunk(size: int, factor: int, where: str) -> int:
    if factor < 1:
        raise ConverterError(f"{where}: shrink_factor must be positive, found {factor}")
    return (size - 1) // factor + 1


def _zoomed(size: int, factor: int, where: str) -> int:
    if factor < 1:
        raise ConverterError(f"{where}: zoom_factor must be positive, found {factor}")
    return size + (size - 1) * (factor - 1)


def interp_spec(layer, where: str) -> InterpSpec:
    """The layer's ``interp_param`` as an InterpSpec, refusing what the forks refuse."""
    ip = layer.param.interp_param
    if ip.pad_beg > 0 or ip.pad_end > 0:
        raise ConverterError(
            f"{where}: pad_beg {ip.pad_beg} and pad_end {ip.pad_end} must not be positive "
            "(the fork only crops)"
        )
    if ip.interp_type not in ("bilinear", "nearest_neighbor"):
        raise ConverterError(
            f"{where}: interp_type must be 'bilinear' or 'nearest_neighbor', "
            f"found '{ip.interp_type}'"
        )

    def given(name: str) -> int | None:
        return getattr(ip, name) if ip.HasField(name) else None

    return InterpSpec(
        given("zoom_factor"),
        given("shrink_factor"),
        given("height"),
        given("width"),
        ip.pad_beg,
        ip.pad_end,
        ip.interp_type == "nearest_neighbor",
    )


def _interp_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    need_bottoms(bottoms, (1, 2), where)
    shape = bottoms[0]
    if len(shape) != 4:
        raise ConverterError(f"{where}: Interp needs a 4-D input, found {shape}")
    reference = bottoms[1] if len(bottoms) == 2 else None
    _, _, out_h, out_w = interp_spec(layer, where).output_size(*shape[2:], reference, where)
    return LayerShapes([(shape[0], shape[1], out_h, out_w)], [])


def _interp_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.resize import Interp

    return Interp(interp_spec(layer, where), where)


_INTERP = '''
class CaffeInterp(nn.Module):
    """The forks' Interp (DeepLab, PSPNet): crop by ``pad_beg``/``pad_end`` (0 or less),
    then resample with aligned corners, bilinear or nearest (half up), from source
    positions computed in float32 as the forks do. Output size: ``size``; or the cropped
    input shrunk (``(n - 1) // shrink + 1``), then zoomed (``(n - 1) * zoom + 1``); or,
    given a second input, its height and width."""

    def __init__(
        self, size=None, shrink=1, zoom=1, pad_beg=0, pad_end=0, nearest=False
    ) -> None:
        super().__init__()
        self.size, self.shrink, self.zoom = size, shrink, zoom
        self.pad_beg, self.pad_end, self.nearest = pad_beg, pad_end, nearest

    def forward(self, x: torch.Tensor, reference: torch.Tensor | None = None):
        begin, extra = -self.pad_beg, self.pad_beg + self.pad_end
        in_h, in_w = x.shape[2] + extra, x.shape[3] + extra
        x = x[:, :, begin : begin + in_h, begin : begin + in_w]
        if reference is not None:
            out_h, out_w = (tuple(reference.shape) + (1, 1))[2:4]
        elif self.size is not None:
            out_h, out_w = self.size
        else:
            out_h = (in_h - 1) // self.shrink * self.zoom + 1
            out_w = (in_w - 1) // self.shrink * self.zoom + 1
        if (in_h, in_w) == (out_h, out_w):
            return x.clone()
        rows, row_weight = self.positions(in_h, out_h, x.device)
        cols, col_weight = self.positions(in_w, out_w, x.device)
        if self.nearest:
            return x[:, :, rows[0]][:, :, :, cols[0]]
        top, bottom = x[:, :, rows[0]], x[:, :, rows[1]]
        lam_h, lam_w = row_weight.to(x.dtype)[:, None], col_weight.to(x.dtype)
        # the forks' order: h0 * (w0 * p00 + w1 * p01) + h1 * (w0 * p10 + w1 * p11)
        upper = (1 - lam_w) * top[..., cols[0]] + lam_w * top[..., cols[1]]
        lower = (1 - lam_w) * bottom[..., cols[0]] + lam_w * bottom[..., cols[1]]
        return (1 - lam_h) * upper + lam_h * lower

    def positions(self, size: int, out: int, device):
        """Per output position, the input positions before and after it (or the nearest
        one) and the fraction between them, in float32 arithmetic."""
        f32 = torch.float32
        ratio = torch.tensor(size - 1 if out > 1 else 0, dtype=f32) / max(out - 1, 1)
        position = ratio * torch.arange(out, dtype=f32)
        if self.nearest:
            return [torch.floor(position.double() + 0.5).long().to(device)], None
        index = position.long()  # truncation, as C++'s int cast
        fraction = position - index.to(f32)
        following = torch.where(index < size - 1, index + 1, index)
        return [index.to(device), following.to(device)], fraction.to(device)
'''


def _interp_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    """The size rule that applies (DeepLab's order), resolved now: the factors, or a
    fixed size; with a second bottom, that blob's."""
    spec = interp_spec(layer, where)
    reference = bottoms[1] if len(bottoms) == 2 else None
    spec.output_size(*bottoms[0][2:], reference, where)  # the same refusals
    args = []
    one_factor = (spec.zoom is None) != (spec.shrink is None)
    if reference is None and (one_factor or spec.height is None or spec.width is None):
        args += [f"shrink={spec.shrink}"] if spec.shrink not in (None, 1) else []
        args += [f"zoom={spec.zoom}"] if spec.zoom not in (None, 1) else []
    elif reference is None:
        args.append(f"size=({spec.height}, {spec.width})")
    args += [f"pad_beg={spec.pad_beg}"] if spec.pad_beg else []
    args += [f"pad_end={spec.pad_end}"] if spec.pad_end else []
    args += ["nearest=True"] if spec.nearest else []
    call = "{m}({0}, {1})" if reference is not None else "{m}({0})"
    return LayerCode(call, f"CaffeInterp({', '.join(args)})", (_INTERP,))


register_layer("Interp", shape=_interp_shapes, module=_interp_module, code=_interp_code)

# ----------------------------------------------------------------------------- Upsample

NEAREST, UNPOOL = "nearest", "unpool"
_SEGNET_FIELDS = ("scale_h", "scale_w", "pad_out_h", "pad_out_w", "upsample_h", "upsample_w")


def upsample_form(layer, where: str) -> str:
    """``NEAREST`` (inisis/caffe: one bottom) or ``UNPOOL`` (SegNet/ENet: bottoms x, mask).

    Raises ConverterError for a layer whose bottoms and fields belong to different forks.
    """
    up = layer.param.upsample_param
    segnet = [name for name in _SEGNET_FIELDS if up.HasField(name)]
    if len(layer.bottoms) == 2:
        if up.HasField("dims_num"):
            raise ConverterError(
                f"{where}: two bottoms make this SegNet's unpooling Upsample, which has no "
                "dims_num (an inisis/caffe field of the one-bottom nearest Upsample)"
            )
        return UNPOOL
    if len(layer.bottoms) == 1:
        if segnet:
            raise ConverterError(
                f"{where}: {', '.join(segnet)} belong to SegNet's unpooling Upsample, which "
                "takes two bottoms (x and a MAX pooling mask); this layer has one"
            )
        return NEAREST
    raise ConverterError(
        f"{where}: Upsample takes one bottom (nearest upsampling, inisis/caffe) or two "
        f"(x and a pooling mask, SegNet/ENet), found {len(layer.bottoms)}"
    )


def unpool_size(up: caffe_pb2.UpsampleParameter, height: int, width: int, where: str):
    """Output (height, width) of SegNet's Upsample for an input of height x width.

    ``upsample_h``/``upsample_w`` when both are given; else the input times ``scale``
    (SegNet's default 2) or ``scale_h``/``scale_w``, minus ``pad_out_h``/``pad_out_w``
    (``UpsampleLayer::LayerSetUp`` and ``Reshape`` of caffe-segnet).
    """
    if up.HasField("upsample_h") and up.HasField("upsample_w"):
        if up.upsample_h <= 1 or up.upsample_w <= 1:
            raise ConverterError(f"{where}: upsample_h and upsample_w must be greater than 1")
        return up.upsample_h, up.upsample_w
    if up.HasField("scale_h") or up.HasField("scale_w"):
        if up.HasField("scale") or not (up.HasField("scale_h") and up.HasField("scale_w")):
            raise ConverterError(
                f"{where}: give upsample_h and upsample_w, or scale, or both scale_h and scale_w"
            )
        scale_h, scale_w = up.scale_h, up.scale_w
    else:
        scale_h = scale_w = up.scale if up.HasField("scale") else 2  # SegNet's default
    if scale_h <= 1 or scale_w <= 1:
        raise ConverterError(f"{where}: the unpooling scale must be greater than 1")
    if (up.pad_out_h and scale_h != 2) or (up.pad_out_w and scale_w != 2):
        raise ConverterError(f"{where}: pad_out_h/pad_out_w need a scale of 2")
    return height * scale_h - int(up.pad_out_h), width * scale_w - int(up.pad_out_w)


def _upsample_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    up = layer.param.upsample_param
    if upsample_form(layer, where) == UNPOOL:
        x = _unpool_bottoms(bottoms, where)
        return LayerShapes([x[:2] + unpool_size(up, x[2], x[3], where)], [])
    dims = up.dims_num
    if dims not in (3, 4):
        raise ConverterError(f"{where}: dims_num must be 3 or 4, found {dims}")
    if len(bottoms[0]) != dims or up.scale < 1:
        raise ConverterError(
            f"{where}: needs a {dims}-D input and scale >= 1, found {bottoms[0]}, scale {up.scale}"
        )
    scaled = dims - 2  # the last two axes (dims_num 4), or the last one (3)
    shape = bottoms[0][: len(bottoms[0]) - scaled] + tuple(
        d * up.scale for d in bottoms[0][len(bottoms[0]) - scaled :]
    )
    return LayerShapes([shape], [])


def _upsample_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.resize import NearestUpsample, Unpool

    up = layer.param.upsample_param
    if upsample_form(layer, where) == UNPOOL:
        return Unpool(*unpool_size(up, bottoms[0][2], bottoms[0][3], where), where)
    return NearestUpsample(up.scale, up.dims_num - 2)


_UNPOOL = '''
class CaffeUnpool(nn.Module):
    """Unpooling by a MAX pooling mask (MaxUnPool; SegNet's Upsample): a zero (N, C,
    height, width) top where each x value lands at the flat position ``int(mask)`` of
    its plane; of two values naming one position the later one stays, as in Caffe."""

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        self.height, self.width = height, width

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        size = self.height * self.width
        values = x.reshape(n, c, -1)
        index = mask.reshape(n, c, -1).long()  # out of the plane: scatter refuses it
        order = torch.arange(values.shape[-1], device=x.device).expand_as(index)
        last = torch.full((n, c, size), -1, dtype=torch.long, device=x.device)
        last = last.scatter_reduce(2, index, order, reduce="amax")
        y = torch.where(last >= 0, values.gather(2, last.clamp(min=0)), 0.0)
        return y.reshape(n, c, self.height, self.width)
'''


def _upsample_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    up = layer.param.upsample_param
    if upsample_form(layer, where) == UNPOOL:
        height, width = unpool_size(up, bottoms[0][2], bottoms[0][3], where)
        return LayerCode("{m}({0}, {1})", f"CaffeUnpool({height}, {width})", (_UNPOOL,))
    expr = "{0}"
    for axis in range(-(up.dims_num - 2), 0):  # each value repeated along H and W
        expr += f".repeat_interleave({up.scale}, dim={axis})"
    return LayerCode(expr)


register_layer("Upsample", shape=_upsample_shapes, module=_upsample_module, code=_upsample_code)

# ----------------------------------------------------------------------------- MaxUnPool


def _unpool_bottoms(bottoms: list[Shape], where: str) -> Shape:
    """The x of (x, mask) bottoms, after the checks Caffe makes on them."""
    need_bottoms(bottoms, 2, where)
    if len(bottoms[0]) != 4 or bottoms[1] != bottoms[0]:
        raise ConverterError(
            f"{where}: needs a 4-D input and a mask of its shape, found {bottoms[0]} and "
            f"{bottoms[1]}"
        )
    return bottoms[0]


def max_unpool_size(layer, where: str) -> tuple[int, int]:
    """MaxUnPool's output height and width: ``dst_h`` and ``dst_w``, both required."""
    mp = layer.param.max_unpool_param
    if not (mp.HasField("dst_h") and mp.HasField("dst_w")):
        raise ConverterError(f"{where}: MaxUnPool needs dst_h and dst_w")
    return mp.dst_h, mp.dst_w


def _max_unpool_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    x = _unpool_bottoms(bottoms, where)
    return LayerShapes([x[:2] + max_unpool_size(layer, where)], [])


def _max_unpool_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.resize import Unpool

    return Unpool(*max_unpool_size(layer, where), where)


def _max_unpool_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    height, width = max_unpool_size(layer, where)
    return LayerCode("{m}({0}, {1})", f"CaffeUnpool({height}, {width})", (_UNPOOL,))


register_layer(
    "MaxUnPool", shape=_max_unpool_shapes, module=_max_unpool_module, code=_max_unpool_code
)

# ----------------------------------------------------------------------------- bilinear


def _four_d(bottoms: list[Shape], where: str) -> Shape:
    need_bottoms(bottoms, 1, where)
    if len(bottoms[0]) != 4:
        raise ConverterError(f"{where}: needs a 4-D (N, C, H, W) input, found {bottoms[0]}")
    return bottoms[0]


def bilinear_size(layer, height: int, width: int, where: str) -> tuple[int, int]:
    """BilinearInterpolate's output size: ``dst_h``/``dst_w`` (a missing one keeps the input's),
    or ``int(size * scale_factor)``; Caffe leaves the size undefined for both or neither."""
    bp = layer.param.bilinear_interpolate_param
    sized = bp.HasField("dst_h") or bp.HasField("dst_w")
    if sized == bp.HasField("scale_factor"):
        raise ConverterError(
            f"{where}: give dst_h/dst_w or scale_factor (exactly one of the two forms)"
        )
    if sized:
        out = (
            bp.dst_h if bp.HasField("dst_h") else height,
            bp.dst_w if bp.HasField("dst_w") else width,
        )
    else:
        factor = np.float32(bp.scale_factor)  # int(height * scale_factor) in float
        out = (int(np.float32(height) * factor), int(np.float32(width) * factor))
    if min(height, width) < 2 or min(out) < 1 or (bp.align_corners and min(out) < 2):
        raise ConverterError(
            f"{where}: needs an input of at least 2x2 and an output of at least "
            f"{'2x2' if bp.align_corners else '1x1'} (align_corners {bp.align_corners}); "
            f"input {height}x{width}, output {out[0]}x{out[1]}"
        )
    return out


def bilinear_source(size: int, out: int, align_corners: bool) -> np.ndarray:
    """BilinearInterpolate's source coordinate of each output row (or column), float32 as
    the fork computes it: ``(size - 1) / (out - 1) * i`` with aligned corners, else
    ``size / out * (i + 0.5) - 0.5``; clamped to [0, size - 1]."""
    i = np.arange(out, dtype=np.float32)
    if align_corners:
        source = np.float32(size - 1) / np.float32(out - 1) * i
    else:  # the float ratio times a double, rounded to float once
        ratio = np.float64(np.float32(size) / np.float32(out))
        source = (ratio * (i.astype(np.float64) + 0.5) - 0.5).astype(np.float32)
    return np.clip(source, np.float32(0), np.float32(size - 1))


def _bilinear_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    n, c, h, w = _four_d(bottoms, where)
    return LayerShapes([(n, c) + bilinear_size(layer, h, w, where)], [])


def _bilinear_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.resize import Bilinear

    size = bilinear_size(layer, bottoms[0][2], bottoms[0][3], where)
    return Bilinear(size, layer.param.bilinear_interpolate_param.align_corners, where)


_LERP = '''
def lerp_along(x: torch.Tensor, dim: int, source: torch.Tensor, first: torch.Tensor):
    """Along ``dim``: ``x[first] * (1 - frac) + x[first + 1] * frac``, ``frac`` being
    ``source - first``; a neighbour past the end counts as zero."""
    size = x.shape[dim]
    view = [1] * x.dim()
    view[dim] = -1
    near = x.index_select(dim, first.to(x.device))
    far = x.index_select(dim, (first + 1).clamp(max=size - 1).to(x.device))
    frac = (source - first).to(x.device, x.dtype).reshape(view)
    kept = (first + 1 < size).to(x.device).reshape(view)
    return near * (1 - frac) + torch.where(kept, far * frac, 0.0)
'''

_BILINEAR = '''
def caffe_bilinear(x: torch.Tensor, size: tuple[int, int], align_corners: bool):
    """The BilinearInterpolate fork layer: source ``(in - 1) / (out - 1) * i`` with
    aligned corners, else ``in / out * (i + 0.5) - 0.5``, in float32 as the fork
    computes it, clamped to the input; neighbours ``clamp(floor(src), 0, in - 2)`` and
    the next one."""
    for dim, out in zip((2, 3), size):
        n = x.shape[dim]
        i = torch.arange(out, dtype=torch.float32)
        if align_corners:
            source = torch.tensor(n - 1, dtype=torch.float32) / (out - 1) * i
        else:  # the float ratio times a double, rounded to float once
            ratio = (torch.tensor(n, dtype=torch.float32) / out).double()
            source = (ratio * (i.double() + 0.5) - 0.5).float()
        source = source.clamp(0, n - 1)
        x = lerp_along(x, dim, source, source.floor().long().clamp(0, n - 2))
    return x
'''


def _bilinear_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    height, width = bilinear_size(layer, bottoms[0][2], bottoms[0][3], where)
    align = layer.param.bilinear_interpolate_param.align_corners
    return LayerCode(
        f"caffe_bilinear({{0}}, ({height}, {width}), {align})", helpers=(_LERP, _BILINEAR)
    )


register_layer(
    "BilinearInterpolate", shape=_bilinear_shapes, module=_bilinear_module, code=_bilinear_code
)


def resize_size(layer, height: int, width: int, where: str) -> tuple[int, int]:
    """Resize's output size: ``height``/``width``, or with ``is_pyramid_test``
    ``int(out_height_scale * H)``, ``int(out_width_scale * W)`` computed in float."""
    rp = layer.param.resize_param
    if rp.is_pyramid_test:
        if not (rp.HasField("out_height_scale") and rp.HasField("out_width_scale")):
            raise ConverterError(
                f"{where}: is_pyramid_test needs out_height_scale and out_width_scale"
            )
        out = (
            int(np.float32(rp.out_height_scale) * np.float32(height)),
            int(np.float32(rp.out_width_scale) * np.float32(width)),
        )
    elif rp.HasField("height") and rp.HasField("width"):
        out = (rp.height, rp.width)
    else:
        raise ConverterError(f"{where}: Resize needs height and width")
    if min(out) < 1:
        raise ConverterError(f"{where}: computed an empty output size {out}")
    return out


def resize_source(size: int, out: int) -> np.ndarray:
    """Resize's source coordinate of each output row (or column): ``i * (size / out)`` in
    float32 (``util_img.cpp``: no half-pixel offset)."""
    return np.arange(out, dtype=np.float32) * (np.float32(size) / np.float32(out))


def _resize_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    n, c, h, w = _four_d(bottoms, where)
    return LayerShapes([(n, c) + resize_size(layer, h, w, where)], [])


def _resize_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.resize import AsymmetricBilinear

    return AsymmetricBilinear(resize_size(layer, bottoms[0][2], bottoms[0][3], where))


_RESIZE = '''
def caffe_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The Resize fork layer's bilinear resize: source ``i * (in / out)`` in float32, no
    half-pixel offset; a neighbour past the last row or column is dropped, not clamped,
    so the last rows and columns of an upscale fade."""
    for dim, out in zip((2, 3), size):
        ratio = torch.tensor(x.shape[dim], dtype=torch.float32) / out
        source = torch.arange(out, dtype=torch.float32) * ratio
        x = lerp_along(x, dim, source, source.floor().long())
    return x
'''


def _resize_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    height, width = resize_size(layer, bottoms[0][2], bottoms[0][3], where)
    return LayerCode(f"caffe_resize({{0}}, ({height}, {width}))", helpers=(_LERP, _RESIZE))


register_layer("Resize", shape=_resize_shapes, module=_resize_module, code=_resize_code)

# ----------------------------------------------------------------------------- PixelShuffle


def pixel_shuffle_factor(layer, channels: int, where: str) -> int:
    """The upscale factor r; the input channels must be a multiple of r * r."""
    r = layer.param.pixelshuffle_param.upscale_factor
    if r < 1 or channels % (r * r):
        raise ConverterError(
            f"{where}: upscale_factor {r} needs channels divisible by {r * r}, found {channels}"
        )
    return r


def _pixel_shuffle_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    n, c, h, w = _four_d(bottoms, where)
    r = pixel_shuffle_factor(layer, c, where)
    return LayerShapes([(n, c // (r * r), h * r, w * r)], [])


def _pixel_shuffle_module(layer, bottoms: list[Shape], where: str):
    from torch import nn

    return nn.PixelShuffle(pixel_shuffle_factor(layer, bottoms[0][1], where))


def _pixel_shuffle_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    return LayerCode(f"F.pixel_shuffle({{0}}, {pixel_shuffle_factor(layer, bottoms[0][1], where)})")


register_layer(
    "PixelShuffle",
    shape=_pixel_shuffle_shapes,
    module=_pixel_shuffle_module,
    code=_pixel_shuffle_code,
)

# ----------------------------------------------------------------------------- Pad


@dataclass(frozen=True)
class Padding:
    """A Pad layer's amounts (up, down, left, right), its mode and constant value."""

    up: int
    down: int
    left: int
    right: int
    mode: str  # "constant", "replicate" or "reflect"
    value: float

    @property
    def crop(self) -> bool:
        """All four negative: the fork crops instead of padding."""
        return max(self.up, self.down, self.left, self.right) < 0


_PAD_MODES = {
    caffe_pb2.PadParameter.CONSTANT: "constant",
    caffe_pb2.PadParameter.REPLICATE: "replicate",
    caffe_pb2.PadParameter.REFLECT: "reflect",
}


def padding(layer, height: int, width: int, where: str) -> Padding:
    """The Pad layer's amounts, refusing what ``pad_layer.cpp`` computes out of bounds:
    negative pads unless all four are (a crop), a crop past the image, a reflection as wide
    as the image."""
    pp = layer.param.pad_param
    pad = Padding(pp.pad_u, pp.pad_d, pp.pad_l, pp.pad_r, _PAD_MODES[pp.pad_type], pp.pad_value)
    amounts = (pad.up, pad.down, pad.left, pad.right)
    if pad.crop:
        if height + pad.up + pad.down < 0 or width + pad.left + pad.right < 0:
            raise ConverterError(
                f"{where}: pads {amounts} crop more than the {height}x{width} input"
            )
    elif min(amounts) < 0:
        raise ConverterError(
            f"{where}: pads {amounts} (up, down, left, right) mix signs; the fork pads when all "
            "are >= 0 and crops when all are < 0"
        )
    elif pad.mode == "reflect" and (
        max(pad.up, pad.down) >= height or max(pad.left, pad.right) >= width
    ):
        raise ConverterError(
            f"{where}: REFLECT pads {amounts} must be smaller than the {height}x{width} input"
        )
    return pad


def _pad_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    n, c, h, w = _four_d(bottoms, where)
    pad = padding(layer, h, w, where)
    return LayerShapes([(n, c, h + pad.up + pad.down, w + pad.left + pad.right)], [])


def _pad_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.resize import Pad

    return Pad(padding(layer, bottoms[0][2], bottoms[0][3], where))


def _pad_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    """``F.pad`` in the layer's mode, or a crop when all four amounts are negative."""
    pad = padding(layer, bottoms[0][2], bottoms[0][3], where)
    if pad.crop:
        return LayerCode(f"{{0}}[:, :, {-pad.up}:{pad.down}, {-pad.left}:{pad.right}]")
    amounts = f"({pad.left}, {pad.right}, {pad.up}, {pad.down})"
    if pad.mode == "constant":
        return LayerCode(f"F.pad({{0}}, {amounts}, value={number(pad.value)})")
    return LayerCode(f'F.pad({{0}}, {amounts}, mode="{pad.mode}")')


register_layer("Pad", shape=_pad_shapes, module=_pad_module, code=_pad_code)
