"""Resizing layers: the DeepLab / PSPNet forks' Interp.

Interp (DeepLab v2 and yjxiong/caffe ``src/caffe/layers/interp_layer.cpp``; the first
PSPNet version, hszhao/PSPNet ``src/caffe/interp_layer.cpp``; both resample with
``caffe_cpu_interp2`` of ``src/caffe/util/interp.cpp``) crops the input by ``pad_beg`` /
``pad_end`` (non-positive: cropping only) and resamples it bilinearly with aligned corners.
"""

from __future__ import annotations

from dataclasses import dataclass

from converter.errors import ConverterError
from converter.layers.registry import LayerShapes, Shape, need_bottoms, register_layer


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


register_layer("Interp", shape=_interp_shapes, module=_interp_module)
