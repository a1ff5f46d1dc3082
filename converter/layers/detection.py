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
from converter.codegen.common import FLT_MAX_HELPER, number
from converter.errors import ConverterError
from converter.layers.registry import (
    ExactPart,
    LayerCode,
    LayerShapes,
    Shape,
    need_bottoms,
    register_layer,
)

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


_PRIOR_BOX = '''
class CaffePriorBox(nn.Module):
    """SSD's PriorBox: the anchors of a feature map, ``(1, 2, H * W * priors * 4)``. Row
    0: the boxes (xmin, ymin, xmax, ymax) normalised by the image size, cell by cell;
    per cell and min size, the square, the sqrt(min * max) square, then one box per
    other aspect ratio. Row 1: the variances. Only the inputs' shapes matter.
    ``img_size``/``step`` (h, w): None to take the image input's size and its ratio to
    the feature map (a float ratio, as in SSD's Caffe)."""

    def __init__(
        self,
        min_sizes: tuple[int, ...],
        max_sizes: tuple[int, ...],
        aspect_ratios: tuple[float, ...],
        variances: tuple[float, ...],
        clip: bool = False,
        offset: float = 0.5,
        img_size: tuple[int, int] | None = None,
        step: tuple[float, float] | None = None,
    ) -> None:
        super().__init__()
        self.min_sizes, self.max_sizes = min_sizes, max_sizes
        self.aspect_ratios, self.variances = aspect_ratios, variances
        self.clip, self.offset, self.img_size, self.step = clip, offset, img_size, step

    def forward(self, feature: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        f32 = torch.float32
        height, width = feature.shape[-2], feature.shape[-1]
        img_h, img_w = self.img_size or (image.shape[-2], image.shape[-1])
        if self.step is None:
            step_h = torch.tensor(img_h, dtype=f32) / height
            step_w = torch.tensor(img_w, dtype=f32) / width
        else:
            step_h, step_w = (torch.tensor(s, dtype=f32) for s in self.step)
        half_sizes = []  # (half width, half height) of each box of a cell
        for index, size in enumerate(self.min_sizes):
            half_sizes.append((size / 2, size / 2))
            if self.max_sizes:
                side = math.sqrt(size * self.max_sizes[index])
                half_sizes.append((side / 2, side / 2))
            for ar in self.aspect_ratios[1:]:
                half_sizes.append((size * math.sqrt(ar) / 2, size / math.sqrt(ar) / 2))
        half = torch.tensor(half_sizes, dtype=torch.float64)
        offset = torch.tensor(self.offset, dtype=f32)
        cy = ((torch.arange(height, dtype=f32) + offset) * step_h).double()
        cx = ((torch.arange(width, dtype=f32) + offset) * step_w).double()
        cy, cx = cy[:, None, None], cx[None, :, None]  # (H, 1, 1), (1, W, 1)
        corners = [
            (cx - half[:, 0]) / img_w,
            (cy - half[:, 1]) / img_h,
            (cx + half[:, 0]) / img_w,
            (cy + half[:, 1]) / img_h,
        ]
        boxes = torch.stack(torch.broadcast_tensors(*corners), dim=-1).reshape(-1)
        if self.clip:
            boxes = boxes.clamp(0.0, 1.0)
        variances = torch.tensor(self.variances, dtype=torch.float64)
        variances = variances.repeat(boxes.numel() // len(self.variances))
        out = torch.stack([boxes, variances])[None]
        return out.to(device=feature.device, dtype=feature.dtype)
'''


def _prior_box_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    c = prior_box_config(layer, where)

    def floats(values) -> str:
        return "(" + ", ".join(number(v) for v in values) + ("," if len(values) == 1 else "") + ")"

    args = [
        "(" + ", ".join(map(str, c.min_sizes)) + ("," if len(c.min_sizes) == 1 else "") + ")",
        "(" + ", ".join(map(str, c.max_sizes)) + ("," if len(c.max_sizes) == 1 else "") + ")",
        floats(c.aspect_ratios),
        floats(c.variances),
    ]
    if c.clip:
        args.append("clip=True")
    if c.offset != 0.5:
        args.append(f"offset={number(c.offset)}")
    if c.img_size is not None:
        args.append(f"img_size=({c.img_size[0]}, {c.img_size[1]})")
    if c.step is not None:
        args.append(f"step=({number(c.step[0])}, {number(c.step[1])})")
    return LayerCode("{m}({0}, {1})", f"CaffePriorBox({', '.join(args)})", (_PRIOR_BOX,))


register_layer("PriorBox", shape=_prior_box_shapes, module=_prior_box_module, code=_prior_box_code)

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


_DETECTION_OUTPUT = '''
class CaffeDetectionOutput(nn.Module):
    """SSD's DetectionOutput: ``(loc, conf, priors) -> (1, 1, rows, 7)``, rows [image,
    label, score, xmin, ymin, xmax, ymax] by image, then label, then score.

    Boxes are decoded from the priors (``code_type``). Per image and class but the
    background, the priors scoring above ``confidence_threshold``, best first (ties in
    prior order), the first ``top_k``; greedy NMS keeps each whose IoU with every box
    kept is at most ``nms_threshold`` (times ``eta`` after each keep while above 0.5);
    without NMS (``nms_threshold`` None) every prior stays. Then the image's
    ``keep_top_k`` best stay. No detection at all: one row of -1 per image, its index
    first. The number of rows depends on the scores.
    """

    def __init__(
        self,
        num_classes: int,
        share_location: bool = True,
        background_label_id: int = 0,
        code_type: str = "corner",
        variance_encoded_in_target: bool = False,
        confidence_threshold: float = -FLT_MAX,
        nms_threshold: float | None = 0.3,
        eta: float = 1.0,
        top_k: int = -1,
        keep_top_k: int = -1,
    ) -> None:
        super().__init__()
        self.num_classes, self.share_location = num_classes, share_location
        self.background_label_id, self.code_type = background_label_id, code_type
        self.variance_encoded_in_target = variance_encoded_in_target
        self.confidence_threshold = confidence_threshold
        self.nms_threshold = nms_threshold
        self.eta, self.top_k, self.keep_top_k = eta, top_k, keep_top_k

    def forward(self, loc: torch.Tensor, conf: torch.Tensor, priors: torch.Tensor):
        images, count = loc.shape[0], priors.shape[-1] // 4
        loc_classes = 1 if self.share_location else self.num_classes
        prior_boxes = priors[0, 0].reshape(count, 4)
        variances = priors[0, 1].reshape(count, 4)
        loc = loc.reshape(images, count, loc_classes, 4)
        conf = conf.reshape(images, count, self.num_classes)
        rows = []
        for image in range(images):
            # (P, loc_classes, 4)
            boxes = self.decode(loc[image], prior_boxes, variances)
            found = []  # (score, label, prior) of each detection of this image
            for label in range(self.num_classes):
                if label == self.background_label_id:
                    continue
                scores = conf[image, :, label]
                label_boxes = boxes[:, 0 if self.share_location else label]
                for prior in self.keep(label_boxes, scores):
                    found.append((scores[prior].item(), label, prior))
            if -1 < self.keep_top_k < len(found):
                found = sorted(found, key=lambda item: -item[0])[: self.keep_top_k]
            found.sort(key=lambda item: (item[1], -item[0]))  # stable: NMS order stays
            for score, label, prior in found:
                box = boxes[prior, 0 if self.share_location else label]
                rows.append(torch.cat([loc.new_tensor([image, label, score]), box]))
        if not rows:
            empty = loc.new_full((images, 7), -1.0)
            empty[:, 0] = torch.arange(images, dtype=loc.dtype, device=loc.device)
            return empty[None, None]
        return torch.stack(rows)[None, None]

    def decode(self, loc: torch.Tensor, priors: torch.Tensor, variances: torch.Tensor):
        """Boxes (P, loc_classes, 4) from the predicted offsets and the priors."""
        if self.variance_encoded_in_target:
            variances = torch.ones_like(variances)
        priors, variances = priors[:, None, :], variances[:, None, :]
        if self.code_type == "corner":
            return priors + variances * loc
        size = priors[..., 2:] - priors[..., :2]  # prior width, height
        if (size <= 0).any():
            raise ValueError("a prior has no width or height")
        if self.code_type == "center_size":
            center = (priors[..., :2] + priors[..., 2:]) / 2
            center = variances[..., :2] * loc[..., :2] * size + center
            extent = torch.exp(variances[..., 2:] * loc[..., 2:]) * size
            return torch.cat([center - extent / 2, center + extent / 2], dim=-1)
        return priors + variances * loc * size.repeat(1, 1, 2)  # corner_size

    def keep(self, boxes: torch.Tensor, scores: torch.Tensor) -> list[int]:
        """The priors one class keeps, in NMS order (best first)."""
        if self.nms_threshold is None:  # no nms_param: every prior, no threshold
            return list(range(len(scores)))
        candidates = torch.nonzero(scores > self.confidence_threshold).flatten()
        order = torch.sort(scores[candidates], descending=True, stable=True).indices
        candidates = candidates[order]
        if self.top_k > -1:
            candidates = candidates[: self.top_k]
        overlap = box_iou(boxes[candidates]).tolist()
        kept: list[int] = []  # positions in candidates
        threshold = self.nms_threshold
        for i in range(len(candidates)):
            if all(overlap[i][j] <= threshold for j in kept):
                kept.append(i)
                if self.eta < 1 and threshold > 0.5:
                    threshold *= self.eta
        return [int(candidates[i]) for i in kept]


def box_iou(boxes: torch.Tensor) -> torch.Tensor:
    """Pairwise intersection over union of (K, 4) boxes; 0 where they do not overlap."""
    low = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    high = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    sides = high - low
    overlapping = (sides > 0).all(dim=-1)
    intersection = sides.prod(dim=-1)
    extent = boxes[:, 2:] - boxes[:, :2]
    area = torch.where((extent >= 0).all(dim=-1), extent.prod(dim=-1), 0.0)
    union = area[:, None] + area[None, :] - intersection
    return torch.where(overlapping, intersection / union, 0.0)
'''


def _detection_code(layer, bottoms: list[Shape], where: str) -> LayerCode:
    """The settings that differ from the helper's defaults, as keyword arguments."""
    c = detection_config(layer, where)
    detection_priors(c, bottoms, where)  # the same refusals
    given = {
        "share_location": (c.share_location, True),
        "background_label_id": (c.background_label_id, 0),
        "code_type": (f'"{c.code_type}"', '"corner"'),
        "variance_encoded_in_target": (c.variance_encoded_in_target, False),
        "confidence_threshold": (number(c.confidence_threshold), number(-FLT_MAX)),
        "nms_threshold": (number(c.nms_threshold) if c.nms else None, number(0.3)),
        "eta": (number(c.eta), number(1.0)),
        "top_k": (c.top_k, -1),
        "keep_top_k": (c.keep_top_k, -1),
    }
    args = [str(c.num_classes)]
    args += [f"{name}={value}" for name, (value, default) in given.items() if value != default]
    return LayerCode(
        "{m}({0}, {1}, {2})",
        f"CaffeDetectionOutput({', '.join(args)})",
        (FLT_MAX_HELPER, _DETECTION_OUTPUT),
    )


register_layer(
    "DetectionOutput",
    shape=_detection_shapes,
    module=_detection_module,
    code=_detection_code,
    # rows [image, label, score, xmin, ymin, xmax, ymax]: the first two are integers
    exact=lambda layer: {0: ExactPart("image ids and labels", axis=-1, index=(0, 1))},
)
