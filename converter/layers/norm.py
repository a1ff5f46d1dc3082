"""BatchNorm, Scale, Bias, LRN and MVN: shape rules, modules and weights; the forks' BN and
SSD's Normalize.

Caffe: ``src/caffe/layers/batch_norm_layer.cpp`` (blobs ``[mean * s, var * s, [s]]``),
``scale_layer.cpp``, ``bias_layer.cpp`` (``axis``/``num_axes``, or the operand as a second
bottom), ``lrn_layer.cpp``, ``mvn_layer.cpp``. BN: see ``bn_variant``. Normalize: SSD's
``normalize_layer.cpp`` (weiliu89/caffe; rule in ``tests/fixtures/fork_layers/case.json``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from converter.codegen.common import literal, number
from converter.errors import ConverterError
from converter.layers.registry import (
    LayerCode,
    LayerShapes,
    Shape,
    canonical_axis,
    need_bottoms,
    register_layer,
)

# ----------------------------------------------------------------------------- BatchNorm


def _batch_norm_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    need_bottoms(bottoms, 1, where)
    channels = bottoms[0][1] if len(bottoms[0]) > 1 else 1
    return LayerShapes([bottoms[0]], [(channels,), (channels,), (1,)])


def use_global_stats(layer) -> bool:
    """Whether a BatchNorm layer normalises with its stored statistics (the TEST default)."""
    bp = layer.param.batch_norm_param
    return bp.use_global_stats if bp.HasField("use_global_stats") else True


def _batch_norm_module_checks(bottoms: list[Shape], where: str) -> None:
    if len(bottoms[0]) < 2:
        raise ConverterError(f"{where}: BatchNorm needs an input with a channel axis")


def _batch_norm_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.norm import BatchNorm

    _batch_norm_module_checks(bottoms, where)
    return BatchNorm(bottoms[0][1], layer.param.batch_norm_param.eps, use_global_stats(layer))


def _batch_norm_weights(layer, blobs, module, where: str) -> dict[str, np.ndarray]:
    """Blobs 0 and 1 times Caffe's factor: 0 if the stored scale factor is 0, else 1 / it.

    Computed in float64, so a float64 model carries them exactly and a float32 one rounds
    them once.
    """
    stored = float(blobs[2].reshape(-1)[0]) if len(blobs) > 2 else 1.0
    factor = 0.0 if stored == 0 else 1.0 / stored  # Caffe's zero guard
    return {
        "running_mean": blobs[0].reshape(-1).astype(np.float64) * factor,
        "running_var": blobs[1].reshape(-1).astype(np.float64) * factor,
    }


_BATCH_NORM = '''
class CaffeBatchNorm(nn.Module):
    """Caffe's BatchNorm: ``(x - mean) / sqrt(var + eps)`` per channel, no affine part
    (a Scale layer follows it). Without ``use_global_stats`` Caffe normalises with the
    batch mean and biased variance even at test time."""

    def __init__(
        self, channels: int, eps: float, use_global_stats: bool = True
    ) -> None:
        super().__init__()
        self.eps = eps
        self.use_global_stats = use_global_stats
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_global_stats:
            mean, var = self.running_mean, self.running_var
            return F.batch_norm(x, mean, var, None, None, False, 0.0, self.eps)
        return F.batch_norm(x, None, None, None, None, True, 0.0, self.eps)
'''


def _batch_norm_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    _batch_norm_module_checks(bottoms, where)
    eps = number(layer.param.batch_norm_param.eps)
    batch = "" if use_global_stats(layer) else ", use_global_stats=False"
    return LayerCode("{m}({0})", f"CaffeBatchNorm({bottoms[0][1]}, {eps}{batch})", (_BATCH_NORM,))


register_layer(
    "BatchNorm",
    shape=_batch_norm_shapes,
    module=_batch_norm_module,
    weights=_batch_norm_weights,
    in_place=True,
    code=_batch_norm_code,
)

# ----------------------------------------------------------------------------- Scale, Bias


def _operand_param(layer):
    return layer.param.scale_param if layer.type == "Scale" else layer.param.bias_param


def _scale_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    need_bottoms(bottoms, (1, 2), where)
    sp = _operand_param(layer)
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
    params = [] if len(bottoms) == 2 else [operand]
    if layer.type == "Scale" and sp.bias_term:
        params.append(operand)
    return LayerShapes([shape], params)


def _operand(layer, bottoms: list[Shape], where: str) -> tuple[int, Shape]:
    """(axis, operand shape) of a Scale or Bias layer, checked against its input."""
    shape = bottoms[0]
    sp = _operand_param(layer)
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
    return axis, tuple(operand)


def _scale_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.norm import Bias, Scale

    axis, operand = _operand(layer, bottoms, where)
    if layer.type == "Bias":
        return Bias(axis, operand if len(bottoms) == 1 else None)
    learned = len(bottoms) == 1
    return Scale(axis, operand, learned=learned, bias=_operand_param(layer).bias_term)


_SCALE = '''
def along(t: torch.Tensor, axis: int, ndim: int) -> torch.Tensor:
    """``t`` viewed so that its axes line up with axes ``axis...`` of an ``ndim``-D
    tensor."""
    return t.reshape((1,) * axis + tuple(t.shape) + (1,) * (ndim - axis - t.dim()))


class CaffeScale(nn.Module):
    """Caffe's Scale: ``x * gamma (+ beta)`` with gamma's axes from ``axis`` on; gamma
    is learned, or given as a second input."""

    def __init__(
        self, axis: int, shape: tuple[int, ...], learned: bool, bias: bool
    ) -> None:
        super().__init__()
        self.axis = axis
        self.weight = nn.Parameter(torch.ones(shape)) if learned else None
        self.bias = nn.Parameter(torch.zeros(shape)) if bias else None

    def forward(
        self, x: torch.Tensor, gamma: torch.Tensor | None = None
    ) -> torch.Tensor:
        gamma = self.weight if gamma is None else gamma
        y = x * along(gamma, self.axis, x.dim())
        if self.bias is not None:
            y = y + along(self.bias, self.axis, x.dim())
        return y


class CaffeBias(nn.Module):
    """Caffe's Bias: ``x + b`` with b's axes from ``axis`` on; b is learned, or given as
    a second input."""

    def __init__(self, axis: int, shape: tuple[int, ...] | None) -> None:
        super().__init__()
        self.axis = axis
        self.bias = nn.Parameter(torch.zeros(shape)) if shape is not None else None

    def forward(self, x: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        b = self.bias if b is None else b
        return x + along(b, self.axis, x.dim())
'''


def _scale_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    axis, operand = _operand(layer, bottoms, where)
    learned = len(bottoms) == 1
    call = "{m}({0})" if learned else "{m}({0}, {1})"
    shape = literal(operand) if len(operand) != 2 else f"({operand[0]}, {operand[1]})"
    if layer.type == "Bias":
        module = f"CaffeBias({axis}, {shape if learned else None})"
    else:
        bias = _operand_param(layer).bias_term
        module = f"CaffeScale({axis}, {shape}, learned={learned}, bias={bias})"
    return LayerCode(call, module, (_SCALE,))


register_layer("Scale", shape=_scale_shapes, module=_scale_module, in_place=True, code=_scale_code)
register_layer("Bias", shape=_scale_shapes, module=_scale_module, in_place=True, code=_scale_code)

# ----------------------------------------------------------------------------- LRN


def _lrn_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    """What ``LRNLayer::LayerSetUp``/``Reshape`` refuse: an even ``local_size``, an input
    that is not 4-D (``lrn_layer.cpp``)."""
    need_bottoms(bottoms, 1, where)
    size = layer.param.lrn_param.local_size
    if size % 2 == 0:
        raise ConverterError(f"{where}: LRN local_size must be odd, found {size}")
    if len(bottoms[0]) != 4:
        raise ConverterError(f"{where}: LRN needs a 4-D input, found {bottoms[0]}")
    return LayerShapes([bottoms[0]], [])


def _lrn_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.norm import LRN

    return LRN(layer.param.lrn_param)


_LRN = '''
class CaffeLRN(nn.Module):
    """Caffe's local response normalisation: ``x * (k + alpha / n * sum x^2) ^ -beta``
    over ``n`` neighbouring channels, or within a channel (an n x n window, k = 1)."""

    def __init__(
        self, size: int, alpha: float, beta: float, k: float, across: bool
    ) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k
        self.across = across

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = (self.size - 1) // 2
        square = x * x
        if self.across:
            padded = F.pad(square, (0, 0, 0, 0, half, half))
            channels = x.shape[1]
            total = padded[:, 0:channels]
            for i in range(1, self.size):
                total = total + padded[:, i : i + channels]
            scale = self.k + (self.alpha / self.size) * total
        else:
            mean = F.avg_pool2d(square, self.size, 1, half, count_include_pad=True)
            scale = 1.0 + self.alpha * mean
        return x * scale.pow(-self.beta)
'''


def _lrn_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    lp = layer.param.lrn_param
    across = lp.norm_region == lp.ACROSS_CHANNELS
    args = [str(lp.local_size), number(lp.alpha), number(lp.beta), number(lp.k), str(across)]
    return LayerCode("{m}({0})", f"CaffeLRN({', '.join(args)})", (_LRN,))


register_layer("LRN", shape=_lrn_shapes, module=_lrn_module, code=_lrn_code)

# ----------------------------------------------------------------------------- Normalize


def _normalize_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    need_bottoms(bottoms, 1, where)
    if len(bottoms[0]) < 2:
        raise ConverterError(f"{where}: Normalize needs an input with a channel axis")
    # a shared scale is stored as a 0-d blob (no shape), as PReLU's shared slope is
    shared = layer.param.norm_param.channel_shared
    return LayerShapes([bottoms[0]], [() if shared else (bottoms[0][1],)])


def _normalize_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.norm import Normalize

    np_ = layer.param.norm_param
    shape = () if np_.channel_shared else (bottoms[0][1],)
    return Normalize(shape, np_.across_spatial, np_.eps)


_NORMALIZE = '''
class CaffeNormalize(nn.Module):
    """SSD's Normalize: ``x / sqrt(sum of x^2 + eps) * weight``, the sum over every axis
    but the batch (``across_spatial``) or over the channels at each position; one
    weight per channel, or one for all (a 0-d weight)."""

    def __init__(self, shape: tuple[int, ...], across_spatial: bool, eps: float):
        super().__init__()
        self.across_spatial, self.eps = across_spatial, eps
        self.weight = nn.Parameter(torch.ones(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(1, x.dim())) if self.across_spatial else (1,)
        norm = torch.sqrt(x.square().sum(dim=dims, keepdim=True) + self.eps)
        scale = self.weight.reshape(self.weight.shape + (1,) * (x.dim() - 2))
        return x / norm * scale
'''


def _normalize_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    np_ = layer.param.norm_param
    shape = "()" if np_.channel_shared else f"({bottoms[0][1]},)"
    module = f"CaffeNormalize({shape}, {np_.across_spatial}, {number(np_.eps)})"
    return LayerCode("{m}({0})", module, (_NORMALIZE,))


register_layer("Normalize", shape=_normalize_shapes, module=_normalize_module, code=_normalize_code)

# ----------------------------------------------------------------------------- MVN


def _mvn_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    need_bottoms(bottoms, 1, where)
    if not 2 <= len(bottoms[0]) <= 4:  # mvn_layer.cpp reads num() and channels()
        raise ConverterError(f"{where}: MVN needs a 2-D to 4-D input, found {bottoms[0]}")
    return LayerShapes([bottoms[0]], [])


def _mvn_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.norm import MVN

    mp = layer.param.mvn_param
    return MVN(mp.normalize_variance, mp.across_channels, mp.eps)


_MVN = '''
def caffe_mvn(x: torch.Tensor, variance: bool, across_channels: bool, eps: float):
    """Caffe's MVN: per sample and channel (per sample ``across_channels``) subtract
    the mean and, with ``variance``, divide by ``sqrt(biased variance) + eps``: Caffe
    adds eps to the standard deviation."""
    groups = x.shape[0] if across_channels else x.shape[0] * x.shape[1]
    flat = x.reshape(groups, -1)
    centred = flat - flat.mean(dim=1, keepdim=True)
    if variance:
        std = centred.square().mean(dim=1, keepdim=True).sqrt()
        centred = centred / (std + eps)
    return centred.reshape(x.shape)
'''


def _mvn_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    mp = layer.param.mvn_param
    args = f"{mp.normalize_variance}, {mp.across_channels}, {number(mp.eps)}"
    return LayerCode(f"caffe_mvn({{0}}, {args})", helpers=(_MVN,))


# Forward_cpu reads only top_data once it has written x - mean there: in place is safe.
register_layer("MVN", shape=_mvn_shapes, module=_mvn_module, in_place=True, code=_mvn_code)


# ----------------------------------------------------------------------------- BN (forks)

# bn_param fields that only one generation of the forks' BN has (proto/caffe.proto).
_PSPNET_FIRST_FIELDS = {"var_eps", "moving_average", "decay", "axis"}
_PSPNET_LATER_FIELDS = {"slope_filler", "bias_filler", "momentum", "eps", "frozen", "engine"}
_SEGNET_FIELDS = {"bn_mode"}
_FILLERS = {"scale_filler", "shift_filler"}  # SegNet and the first PSPNet
_SEGNET_EPS = 1e-9  # var_eps_ is set to this in SegNet's LayerSetUp, not read from the prototxt
_CUDNN_MIN_EPS = 1e-5  # CUDNN_BN_MIN_EPSILON: cuDNN's engine raises eps to at least this


@dataclass(frozen=True)
class BNVariant:
    """What one fork's ``BN`` layer computes in the TEST phase.

    ``statistics``: "none" (``y = scale * x + shift``), "batch" (normalise by the batch's
    mean and biased variance over every axis but ``axis``) or "stored" (by the blobs'
    mean and variance); then ``y = (x - mean) / sqrt(var + eps) * scale + shift``.
    ``blobs``: 2 (scale, shift) or 4 (scale, shift, mean, variance), each shaped like a
    4-D blob of ones with the channels at ``axis``.
    """

    fork: str
    statistics: str
    eps: float
    blobs: int
    axis: int = 1


def bn_variant(layer, where: str) -> BNVariant | None:
    """Which fork's BN ``layer`` is, from the bn_param fields its prototxt sets and, where
    those do not say, the number of blobs its caffemodel holds (None: no caffemodel).

    - SegNet / ENet (alexgkendall/caffe-segnet and TimoSaemann/caffe-segnet-cudnn5
      ``src/caffe/layers/bn_layer.cpp``; TimoSaemann/caffe-enet's caffe.proto has the same
      BNParameter): blobs scale, shift. ``bn_mode: INFERENCE``: ``scale * x + shift``;
      ``LEARN`` (the default), in any phase: batch statistics with eps 1e-9.
    - PSPNet, first version (hszhao/PSPNet@88d0b3e ``src/caffe/layers/bn_layer.cpp``):
      fields ``var_eps`` (default 1e-10), ``moving_average``, ``decay``, ``axis`` (1 or 2);
      blobs scale, shift, mean, variance. TEST phase: the stored statistics if
      ``moving_average``, else the batch's; eps ``var_eps``.
    - PSPNet, later version, and yjxiong/caffe (hszhao/PSPNet@c479f4f
      ``src/caffe/layers/bn_layer.cpp``): fields ``slope_filler``, ``bias_filler``,
      ``momentum``, ``eps`` (default 1e-5), ``frozen``, ``engine``; blobs slope, bias, mean,
      variance. TEST phase: the stored statistics, eps ``eps`` (``engine: CUDNN``: at
      least 1e-5, as cuDNN requires; the default engine of a CPU build is Caffe's own).
    - Only ``scale_filler``/``shift_filler``, or nothing: SegNet's LEARN with 2 blobs, the
      first PSPNet without moving average (batch statistics, eps 1e-10) with 4 and a
      filler; 4 blobs and no field at all fit two PSPNet versions that compute
      differently, and are refused.
    """
    bp = layer.param.bn_param
    given = {field.name for field, _ in bp.ListFields()}
    blobs = len(layer.blobs) if layer.blobs else None

    def mixed(*groups: set[str]) -> None:
        found = [sorted(given & group) for group in groups if given & group]
        if len(found) > 1:
            raise ConverterError(
                f"{where}: bn_param mixes fields of different forks' BN layers: {found}"
            )

    if given & _PSPNET_FIRST_FIELDS:
        mixed(_PSPNET_FIRST_FIELDS | _FILLERS, _SEGNET_FIELDS, {"slope_filler", "bias_filler"})
        if bp.axis not in (1, 2):
            raise ConverterError(f"{where}: BN axis must be 1 or 2, found {bp.axis}")
        statistics = "stored" if bp.moving_average else "batch"
        return BNVariant("PSPNet (first version)", statistics, bp.var_eps, 4, bp.axis)
    if given & _PSPNET_LATER_FIELDS:
        mixed(_PSPNET_LATER_FIELDS, _SEGNET_FIELDS | _FILLERS)
        eps = bp.eps
        if bp.engine == bp.CUDNN:
            eps = max(eps, _CUDNN_MIN_EPS)
        return BNVariant("PSPNet (later version) / yjxiong", "stored", eps, 4)
    if "bn_mode" in given or blobs == 2:
        statistics = "none" if bp.bn_mode == bp.INFERENCE else "batch"
        return BNVariant("SegNet / ENet", statistics, _SEGNET_EPS, 2)
    if blobs == 4 and given & _FILLERS:
        return BNVariant("PSPNet (first version)", "batch", bp.var_eps, 4)
    if blobs == 4:
        raise ConverterError(
            f"{where}: a BN layer with 4 blobs and no bn_param field that says which fork "
            "wrote it: the first PSPNet normalises by the batch (eps 1e-10), the later one "
            "and yjxiong/caffe by the stored mean and variance (eps 1e-5); add "
            "'moving_average: true' (first version) or 'frozen: true' (later) to bn_param"
        )
    if blobs is not None:
        raise ConverterError(f"{where}: a BN layer holds 2 or 4 blobs, the caffemodel has {blobs}")
    return None


def _bn_channels(layer, shape: Shape, axis: int, where: str) -> int:
    if not axis < len(shape) <= 4:
        raise ConverterError(
            f"{where}: BN needs a blob of {axis + 1} to 4 axes (channels at axis {axis}), "
            f"found {shape}"
        )
    return shape[axis]


def _bn_blob_shape(channels: int, axis: int) -> Shape:
    return tuple(channels if i == axis else 1 for i in range(4))


def _bn_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    need_bottoms(bottoms, 1, where)
    variant = bn_variant(layer, where)
    axis = variant.axis if variant else 1
    channels = _bn_channels(layer, bottoms[0], axis, where)
    if variant is None:
        return LayerShapes([bottoms[0]], None)  # 2 or 4 blobs: the caffemodel says
    return LayerShapes([bottoms[0]], [_bn_blob_shape(channels, axis)] * variant.blobs)


def _bn_built(layer, bottoms: list[Shape], where: str) -> tuple[BNVariant, int]:
    """(variant, channels) a BN layer's module computes with. Without a caffemodel a BN
    layer whose prototxt does not name its fork becomes the batch-statistics form both
    candidates compute; its eps comes with the weights."""
    variant = bn_variant(layer, where) or BNVariant("SegNet / ENet", "batch", _SEGNET_EPS, 2)
    return variant, _bn_channels(layer, bottoms[0], variant.axis, where)


def _bn_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.norm import BN

    variant, channels = _bn_built(layer, bottoms, where)
    return BN(channels, variant.axis, variant.statistics, variant.eps)


def _bn_weights(layer, blobs, module, where: str) -> dict[str, np.ndarray]:
    variant = bn_variant(layer, where)
    channels = module.weight.shape[0]
    if any(blob.size != channels for blob in blobs):
        raise ConverterError(
            f"{where}: BN blobs must hold {channels} values each, found shapes "
            f"{[tuple(b.shape) for b in blobs]}"
        )
    arrays = {"weight": blobs[0].reshape(-1), "bias": blobs[1].reshape(-1)}
    if variant.statistics == "stored":
        arrays["running_mean"] = blobs[2].reshape(-1)
        arrays["running_var"] = blobs[3].reshape(-1)
    if variant.statistics != "none":
        arrays["eps"] = np.array(variant.eps, dtype=np.float64)
    return arrays


_BN = '''
class ForkBN(nn.Module):
    """The Caffe forks' BN: ``x * weight + bias`` (``statistics`` "none"), or first
    ``(x - mean) / sqrt(var + eps)`` with the batch's mean and biased variance over
    every axis but ``axis`` ("batch") or the stored ones ("stored"); one weight, bias,
    mean and variance per channel at ``axis``. eps is a buffer: the weights decide it."""

    def __init__(self, channels: int, axis: int, statistics: str) -> None:
        super().__init__()
        self.axis, self.statistics = axis, statistics
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        if statistics == "stored":
            self.register_buffer("running_mean", torch.zeros(channels))
            self.register_buffer("running_var", torch.ones(channels))
        if statistics != "none":
            self.register_buffer("eps", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        view = [1] * x.dim()
        view[self.axis] = -1
        weight, bias = self.weight.reshape(view), self.bias.reshape(view)
        if self.statistics == "none":
            return x * weight + bias
        if self.statistics == "stored":
            mean, var = self.running_mean.reshape(view), self.running_var.reshape(view)
        else:
            dims = [d for d in range(x.dim()) if d != self.axis]
            mean = x.mean(dim=dims, keepdim=True)
            var = (x - mean).square().mean(dim=dims, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps.to(x.dtype)) * weight + bias
'''


def _bn_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    variant, channels = _bn_built(layer, bottoms, where)
    args = f'{channels}, {variant.axis}, "{variant.statistics}"'
    return LayerCode("{m}({0})", f"ForkBN({args})", (_BN,))


register_layer(
    "BN",
    shape=_bn_shapes,
    module=_bn_module,
    weights=_bn_weights,
    in_place=True,
    code=_bn_code,
)
