"""SSD's PriorBox and DetectionOutput in NumPy, following the loops of ``prior_box_layer.cpp``,
``detection_output_layer.cpp`` and ``bbox_util.cpp`` (decode, ``ApplyNMSFast``,
``JaccardOverlap``), box by box."""

from __future__ import annotations

import math

import numpy as np

from converter.errors import ConverterError
from converter.executor.registry import executes
from converter.layers.detection import (
    CENTER_SIZE,
    CORNER,
    DetectionConfig,
    detection_config,
    detection_priors,
    prior_box_config,
)


@executes("PriorBox")
def _prior_box(layer, bottoms, params, where):
    c = prior_box_config(layer, where)
    feature, image = bottoms
    height, width = feature.shape[2:]
    img_h, img_w = c.img_size or image.shape[2:]
    if c.step is None:
        step_h = np.float32(img_h) / np.float32(height)
        step_w = np.float32(img_w) / np.float32(width)
    else:
        step_h, step_w = np.float32(c.step[0]), np.float32(c.step[1])
    boxes = []
    for h in range(height):
        for w in range(width):
            center_x = float((np.float32(w) + np.float32(c.offset)) * step_w)
            center_y = float((np.float32(h) + np.float32(c.offset)) * step_h)
            sizes = []  # (box width, box height)
            for s, min_size in enumerate(c.min_sizes):
                sizes.append((min_size, min_size))
                if c.max_sizes:
                    side = math.sqrt(min_size * c.max_sizes[s])
                    sizes.append((side, side))
                for ar in c.aspect_ratios:
                    if abs(ar - 1.0) < 1e-6:
                        continue
                    sizes.append((min_size * math.sqrt(ar), min_size / math.sqrt(ar)))
            for box_w, box_h in sizes:
                boxes += [
                    (center_x - box_w / 2.0) / img_w,
                    (center_y - box_h / 2.0) / img_h,
                    (center_x + box_w / 2.0) / img_w,
                    (center_y + box_h / 2.0) / img_h,
                ]
    top = np.empty((1, 2, len(boxes)), dtype=feature.dtype)
    top[0, 0] = np.clip(boxes, 0.0, 1.0) if c.clip else boxes
    top[0, 1] = np.tile(np.asarray(c.variances, dtype=np.float64), len(boxes) // len(c.variances))
    return [top]


@executes("DetectionOutput")
def _detection_output(layer, bottoms, params, where):
    c = detection_config(layer, where)
    loc, conf, priors = bottoms
    count = detection_priors(c, [b.shape for b in bottoms], where)
    images = loc.shape[0]
    loc = loc.reshape(images, count, c.loc_classes, 4)
    conf = conf.reshape(images, count, c.num_classes)
    prior_boxes = priors[0, 0].reshape(count, 4)
    variances = priors[0, 1].reshape(count, 4)
    rows = []
    for i in range(images):
        decoded = _decoded(c, loc[i], prior_boxes, variances, where)
        indices: dict[int, list[int]] = {}
        for label in range(c.num_classes):
            if label == c.background_label_id:
                continue
            boxes = decoded[-1 if c.share_location else label]
            if c.nms:
                indices[label] = _apply_nms_fast(c, boxes, conf[i, :, label])
            else:
                indices[label] = list(range(count))
        detections = sum(len(kept) for kept in indices.values())
        if c.keep_top_k > -1 and detections > c.keep_top_k:
            pairs = [(conf[i, p, label], label, p) for label in indices for p in indices[label]]
            pairs.sort(key=lambda pair: pair[0], reverse=True)  # stable: ties keep order
            indices = {}
            for _, label, p in pairs[: c.keep_top_k]:
                indices.setdefault(label, []).append(p)
        for label in sorted(indices):
            boxes = decoded[-1 if c.share_location else label]
            for p in indices[label]:
                rows.append([i, label, conf[i, p, label], *boxes[p]])
    if not rows:
        empty = np.full((1, 1, images, 7), -1.0, dtype=loc.dtype)
        empty[0, 0, :, 0] = np.arange(images)
        return [empty]
    return [np.asarray(rows, dtype=loc.dtype)[None, None]]


def _decoded(c: DetectionConfig, loc, prior_boxes, variances, where: str) -> dict:
    """One image's boxes: loc label -> (P, 4) decoded boxes (label -1 when shared), the
    background's left out. ``loc`` is (P, loc_classes, 4)."""
    decoded = {}
    for k in range(c.loc_classes):
        label = -1 if c.share_location else k
        if label == c.background_label_id:
            continue
        decoded[label] = np.array(
            [
                _decode(c, prior_boxes[p], variances[p], loc[p, k], where)
                for p in range(len(prior_boxes))
            ]
        )
    return decoded


def _decode(c: DetectionConfig, prior, variance, offsets, where: str) -> list[float]:
    """``DecodeBBox``: one box (xmin, ymin, xmax, ymax) from a prior and predicted offsets."""
    v = [1.0] * 4 if c.variance_encoded_in_target else list(variance)
    if c.code_type == CORNER:
        return [prior[k] + v[k] * offsets[k] for k in range(4)]
    prior_w, prior_h = prior[2] - prior[0], prior[3] - prior[1]
    if prior_w <= 0 or prior_h <= 0:
        raise ConverterError(f"{where}: a prior has no width or height: {list(prior)}")
    if c.code_type == CENTER_SIZE:
        center_x = v[0] * offsets[0] * prior_w + (prior[0] + prior[2]) / 2
        center_y = v[1] * offsets[1] * prior_h + (prior[1] + prior[3]) / 2
        box_w = math.exp(v[2] * offsets[2]) * prior_w
        box_h = math.exp(v[3] * offsets[3]) * prior_h
        return [
            center_x - box_w / 2,
            center_y - box_h / 2,
            center_x + box_w / 2,
            center_y + box_h / 2,
        ]
    scale = (prior_w, prior_h, prior_w, prior_h)  # CORNER_SIZE
    return [prior[k] + v[k] * offsets[k] * scale[k] for k in range(4)]


def _apply_nms_fast(c: DetectionConfig, boxes: np.ndarray, scores: np.ndarray) -> list[int]:
    """``ApplyNMSFast``: candidates above the confidence threshold, best first (stable), the
    first top_k; each kept if its overlap with every kept box is at most the (adaptive)
    threshold."""
    candidates = [p for p in range(len(scores)) if scores[p] > c.confidence_threshold]
    candidates.sort(key=lambda p: scores[p], reverse=True)
    if c.top_k > -1:
        candidates = candidates[: c.top_k]
    kept: list[int] = []
    threshold = c.nms_threshold
    for p in candidates:
        keep = all(_jaccard(boxes[p], boxes[q]) <= threshold for q in kept)
        if keep:
            kept.append(p)
            if c.eta < 1 and threshold > 0.5:
                threshold *= c.eta
    return kept


def _jaccard(a, b) -> float:
    """``JaccardOverlap`` of normalised boxes: intersection / union, 0 when they do not
    overlap."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if (b[0] > a[2] or b[2] < a[0] or b[1] > a[3] or b[3] < a[1]) or width <= 0 or height <= 0:
        return 0.0
    intersection = width * height
    return intersection / (_size(a) + _size(b) - intersection)


def _size(box) -> float:
    """``BBoxSize``: width * height, 0 for an inverted box."""
    if box[2] < box[0] or box[3] < box[1]:
        return 0.0
    return (box[2] - box[0]) * (box[3] - box[1])


def detections_ranked_as(
    layer, bottoms: list[np.ndarray], ours: np.ndarray, tolerance: float, box_tolerance: float
) -> tuple[np.ndarray | None, float]:
    """The reference's DetectionOutput on its own ``bottoms`` (loc, conf, priors), its
    confidences moved by at most ``window`` (``tolerance`` times the largest confidence)
    each so that it ranks the priors as ``ours`` (the same layer's top, computed elsewhere:
    rows [image, label, score, box]) does; and ``window``.

    Each row of ours is matched to the prior whose decoded box (for that image and label) is
    within ``box_tolerance`` of its box and whose score is within ``window`` of its score;
    that score becomes ours, and every score not in ours goes down by ``window``. Where
    scores tie to within ``window`` (a softmax saturated in float32: many exactly 1.0), this
    breaks the ties the way ours did, which NMS and keep_top_k then follow. Returns the top
    (1, 1, rows, 7), or None when a row of ours is no prior of the reference's within those
    bounds (a wrong box or label: no tie explains it).
    """
    window = tolerance * max(float(np.abs(bottoms[1]).max(initial=0.0)), 1e-30)
    where = f"layer '{layer.name}' (DetectionOutput)"
    c = detection_config(layer, where)
    loc, conf, priors = (np.asarray(b, dtype=np.float64) for b in bottoms)
    count = detection_priors(c, [b.shape for b in bottoms], where)
    images = loc.shape[0]
    loc = loc.reshape(images, count, c.loc_classes, 4)
    scores = conf.reshape(images, count, c.num_classes)
    prior_boxes, variances = priors[0, 0].reshape(count, 4), priors[0, 1].reshape(count, 4)
    decoded = [_decoded(c, loc[i], prior_boxes, variances, where) for i in range(images)]
    moved = scores - window
    taken = np.zeros(scores.shape, dtype=bool)
    for row in np.asarray(ours, dtype=np.float64).reshape(-1, 7):
        image, label, score = int(row[0]), int(row[1]), row[2]
        if label < 0:  # an image without detections: no prior to match
            continue
        if not (0 <= image < images and 0 <= label < c.num_classes):
            return None, window
        boxes = decoded[image].get(-1 if c.share_location else label)
        if boxes is None:  # the background class
            return None, window
        distance = np.abs(scores[image, :, label] - score)
        near = (distance <= window) & ~taken[image, :, label]
        near &= np.abs(boxes - row[3:]).max(axis=1) <= box_tolerance
        if not near.any():
            return None, window
        prior = int(np.argmin(np.where(near, distance, np.inf)))
        taken[image, prior, label] = True
        moved[image, prior, label] = score
    bottoms = [loc.reshape(bottoms[0].shape), moved.reshape(conf.shape), priors]
    return _detection_output(layer, bottoms, [], where)[0], window
