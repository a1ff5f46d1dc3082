"""SSD's detection layers: PriorBox (the anchors of one feature map) and DetectionOutput
(decode, per-class NMS, keep_top_k).

Caffe: weiliu89/caffe's ``prior_box_layer.cpp``, ``detection_output_layer.cpp`` and
``util/bbox_util.cpp``, as the inisis/caffe fork carries them; the rules, checked against that
fork's outputs, are in ``tests/fixtures/fork_layers/case.json``. Both layers hold no weights.
The settings are read once, into ``PriorBoxConfig`` and ``DetectionConfig``, which the torch
modules and the NumPy executor both take, each computing the layer its own way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from converter import caffe_pb2
from converter.errors import ConverterError
from converter.layers.registry import ExactPart, LayerShapes, Shape, need_bottoms, register_layer

FLT_MAX = 3.4028234663852886e38

# ----------------------------------------------------------------------------- PriorBox


@dataclass(frozen=True)
class PriorBoxConfig:
    """A PriorBox layer's settings as ``PriorBoxLayer::LayerSetUp`` derives them.

    ``min_sizes``/``max_sizes`` are truncated to int, as the .cpp does (``int min_size_ =
    min_sizes_[s]``); ``aspect_ratios`` starts with 1 and has each new ratio followed by its
    inverse when ``flip``; ``img_size``/``step`` are (h, w), or None to take them from the
    image bottom / the feature map's ratio to it.
    """

    min_sizes: tuple[int, ...]
    max_sizes: tuple[int, ...]
    aspect_ratios: tuple[float, ...]
    clip: bool
    variances: tuple[float, ...]  # one value, or four (xmin, ymin, xmax, ymax)
    img_size: tuple[int, int] | None
    step: tuple[float, float] | None
    offset: float

    @property
    def num_priors(self) -> int:
        """Boxes per feature-map cell."""
        return len(self.aspect_ratios) * len(self.min_sizes) + len(self.max_sizes)


def prior_box_config(layer, where: str) -> PriorBoxConfig:
    """The layer's PriorBoxConfig, refusing what Caffe's CHECKs refuse."""
    pp = layer.param.prior_box_param
    if not pp.min_size or min(pp.min_size) <= 0:
        raise ConverterError(f"{where}: PriorBox needs positive min_size values")
    if pp.max_size and (
        len(pp.max_size) != len(pp.min_size)
        or any(high <= low for low, high in zip(pp.min_size, pp.max_size))
    ):
        raise ConverterError(f"{where}: needs one max_size above each min_size")
    ratios = [1.0]
    for ar in pp.aspect_ratio:
        if any(abs(ar - known) < 1e-6 for known in ratios):
            continue
        ratios.append(ar)
        if pp.flip:
            ratios.append(1.0 / ar)
    variances = tuple(pp.variance) or (0.1,)
    if len(variances) not in (1, 4) or min(variances) <= 0:
        raise ConverterError(f"{where}: give one positive variance or four, found {variances}")
    img_size = _pair(pp, "img_size", "img_h", "img_w", where)
    step = _pair(pp, "step", "step_h", "step_w", where)
    return PriorBoxConfig(
        tuple(int(s) for s in pp.min_size),
        tuple(int(s) for s in pp.max_size),
        tuple(ratios),
        pp.clip,
        variances,
        None if img_size is None else (int(img_size[0]), int(img_size[1])),
        step,
        pp.offset,
    )


def _pair(pp, both: str, h: str, w: str, where: str) -> tuple[float, float] | None:
    """``h``/``w`` when given, else ``both`` for each, else None; not both forms."""
    if pp.HasField(h) or pp.HasField(w):
        if pp.HasField(both):
            raise ConverterError(f"{where}: give {both} or {h}/{w}, not both")
        pair = (getattr(pp, h), getattr(pp, w))
    elif pp.HasField(both):
        pair = (getattr(pp, both),) * 2
    else:
        return None
    if min(pair) <= 0:
        raise ConverterError(f"{where}: {h} and {w} must be positive, found {pair}")
    return pair


def _prior_box_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    need_bottoms(bottoms, 2, where)
    if len(bottoms[0]) != 4 or len(bottoms[1]) != 4:
        raise ConverterError(f"{where}: needs a 4-D feature map and a 4-D image, found {bottoms}")
    config = prior_box_config(layer, where)
    return LayerShapes([(1, 2, bottoms[0][2] * bottoms[0][3] * config.num_priors * 4)], [])


def _prior_box_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.detection import PriorBox

    return PriorBox(prior_box_config(layer, where))


register_layer("PriorBox", shape=_prior_box_shapes, module=_prior_box_module)

# ----------------------------------------------------------------------------- DetectionOutput

CORNER, CENTER_SIZE, CORNER_SIZE = "corner", "center_size", "corner_size"
_CODE_TYPES = {
    caffe_pb2.PriorBoxParameter.CORNER: CORNER,
    caffe_pb2.PriorBoxParameter.CENTER_SIZE: CENTER_SIZE,
    caffe_pb2.PriorBoxParameter.CORNER_SIZE: CORNER_SIZE,
}


@dataclass(frozen=True)
class DetectionConfig:
    """A DetectionOutput layer's settings as ``DetectionOutputLayer::LayerSetUp`` reads them.

    ``nms`` is False when the layer has no ``nms_param``: this fork then keeps every prior
    of every class (weiliu89/caffe always runs NMS, with threshold 0.3). ``top_k`` and
    ``keep_top_k`` are -1 for "no limit"; ``confidence_threshold`` is -FLT_MAX when unset.
    """

    num_classes: int
    share_location: bool
    background_label_id: int
    code_type: str
    variance_encoded_in_target: bool
    keep_top_k: int
    confidence_threshold: float
    nms: bool
    nms_threshold: float
    eta: float
    top_k: int

    @property
    def loc_classes(self) -> int:
        """Location predictions per prior: one shared box, or one per class."""
        return 1 if self.share_location else self.num_classes


def detection_config(layer, where: str) -> DetectionConfig:
    """The layer's DetectionConfig, refusing what Caffe's CHECKs refuse."""
    dp = layer.param.detection_output_param
    if not dp.HasField("num_classes") or dp.num_classes < 1:
        raise ConverterError(f"{where}: DetectionOutput needs num_classes")
    if dp.share_location and dp.background_label_id == -1:
        raise ConverterError(
            f"{where}: share_location with background_label_id -1: Caffe takes the shared "
            "boxes (label -1) for the background, skips them and aborts"
        )
    nms = dp.HasField("nms_param")
    nms_threshold, eta = dp.nms_param.nms_threshold, dp.nms_param.eta
    if nms and (nms_threshold < 0 or not 0 < eta <= 1):
        raise ConverterError(
            f"{where}: nms_threshold must be >= 0 and eta in (0, 1], found {nms_threshold}, {eta}"
        )
    return DetectionConfig(
        num_classes=dp.num_classes,
        share_location=dp.share_location,
        background_label_id=dp.background_label_id,
        code_type=_CODE_TYPES[dp.code_type],
        variance_encoded_in_target=dp.variance_encoded_in_target,
        keep_top_k=dp.keep_top_k,
        confidence_threshold=(
            dp.confidence_threshold if dp.HasField("confidence_threshold") else -FLT_MAX
        ),
        nms=nms,
        nms_threshold=nms_threshold,
        eta=eta,
        top_k=dp.nms_param.top_k if nms and dp.nms_param.HasField("top_k") else -1,
    )


def detection_priors(config: DetectionConfig, bottoms: list[Shape], where: str) -> int:
    """The number of priors P, after checking that loc (N, P*L*4), conf (N, P*C) and the
    priors (1, 2, P*4) agree (``DetectionOutputLayer::Reshape``)."""
    need_bottoms(bottoms, 3, where)
    loc, conf, priors = bottoms
    if len(priors) < 3 or priors[2] % 4:
        raise ConverterError(f"{where}: the priors bottom must be (1, 2, P*4), found {priors}")
    count = priors[2] // 4
    if math.prod(loc[1:]) != count * config.loc_classes * 4 or math.prod(conf[1:]) != (
        count * config.num_classes
    ):
        raise ConverterError(
            f"{where}: {count} priors need loc (N, {count * config.loc_classes * 4}) and conf "
            f"(N, {count * config.num_classes}), found {loc} and {conf}"
        )
    if loc[0] != conf[0]:
        raise ConverterError(f"{where}: loc and conf differ in batch size: {loc}, {conf}")
    return count


def _detection_shapes(layer, bottoms: list[Shape], where: str) -> LayerShapes:
    config = detection_config(layer, where)
    count = detection_priors(config, bottoms, where)
    # The rows depend on the scores; the shape is the most there can be: per image every
    # class but the background, each keeping up to top_k priors, then up to keep_top_k; and
    # one row per image (all -1) when nothing at all is found.
    classes = config.num_classes - (0 <= config.background_label_id < config.num_classes)
    per_class = min(count, config.top_k) if config.top_k > -1 else count
    per_image = classes * per_class
    if config.keep_top_k > -1:
        per_image = min(per_image, config.keep_top_k)
    images = bottoms[0][0]
    return LayerShapes([(1, 1, max(images * per_image, images), 7)], [], at_most=True)


def _detection_module(layer, bottoms: list[Shape], where: str):
    from converter.modules.detection import DetectionOutput

    return DetectionOutput(detection_config(layer, where), where)


register_layer(
    "DetectionOutput",
    shape=_detection_shapes,
    module=_detection_module,
    # rows [image, label, score, xmin, ymin, xmax, ymax]: the first two are integers
    exact=lambda layer: {0: ExactPart("image ids and labels", axis=-1, index=(0, 1))},
)
