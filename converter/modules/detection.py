"""SSD's PriorBox and DetectionOutput as modules (rules: ``converter/layers/detection.py``)."""

from __future__ import annotations

import math

import torch
from torch import nn

from converter.errors import ConverterError
from converter.layers.detection import (
    CENTER_SIZE,
    CORNER,
    DetectionConfig,
    PriorBoxConfig,
)
from converter.modules import exporting


class PriorBox(nn.Module):
    """The anchors of a feature map: ``forward(feature, image) -> (1, 2, H*W*priors*4)``.

    Row 0 holds the boxes (xmin, ymin, xmax, ymax, normalised by the image size), cell by
    cell in row-major order, each cell's boxes in Caffe's order: per min size, the square,
    then the sqrt(min * max) square, then one box per other aspect ratio. Row 1 holds the
    variances. Only the inputs' shapes matter.
    """

    def __init__(self, config: PriorBoxConfig):
        super().__init__()
        self.config = config

    def extra_repr(self) -> str:
        return repr(self.config)

    def forward(self, feature: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        c = self.config
        height, width = feature.shape[-2], feature.shape[-1]
        img_h, img_w = c.img_size or (image.shape[-2], image.shape[-1])
        if c.step is None:  # the ratio is a float in the .cpp
            step_h = torch.tensor(img_h, dtype=torch.float32) / height
            step_w = torch.tensor(img_w, dtype=torch.float32) / width
        else:
            step_h, step_w = (torch.tensor(s, dtype=torch.float32) for s in c.step)
        half_sizes = []  # (half width, half height) of each box of a cell
        for index, size in enumerate(c.min_sizes):
            half_sizes.append((size / 2, size / 2))
            if c.max_sizes:
                side = math.sqrt(size * c.max_sizes[index])
                half_sizes.append((side / 2, side / 2))
            for ar in c.aspect_ratios[1:]:
                half_sizes.append((size * math.sqrt(ar) / 2, size / math.sqrt(ar) / 2))
        half = torch.tensor(half_sizes, dtype=torch.float64)  # (priors, 2)
        offset = torch.tensor(c.offset, dtype=torch.float32)
        cy = ((torch.arange(height, dtype=torch.float32) + offset) * step_h).double()
        cx = ((torch.arange(width, dtype=torch.float32) + offset) * step_w).double()
        cy, cx = cy[:, None, None], cx[None, :, None]  # (H, 1, 1), (1, W, 1)
        boxes = torch.stack(
            torch.broadcast_tensors(
                (cx - half[:, 0]) / img_w,
                (cy - half[:, 1]) / img_h,
                (cx + half[:, 0]) / img_w,
                (cy + half[:, 1]) / img_h,
            ),
            dim=-1,
        ).reshape(-1)
        if c.clip:
            boxes = boxes.clamp(0.0, 1.0)
        variances = torch.tensor(c.variances, dtype=torch.float64)
        variances = variances.repeat(boxes.numel() // len(c.variances))
        out = torch.stack([boxes, variances])[None]
        return out.to(device=feature.device, dtype=feature.dtype)


class DetectionOutput(nn.Module):
    """``forward(loc, conf, priors) -> (1, 1, rows, 7)``: rows [image, label, score, xmin,
    ymin, xmax, ymax] by image, then label, then score (descending) within a label.

    Boxes are decoded from the priors; per image and class (not the background) the priors
    scoring above the confidence threshold are taken best first (ties in prior order), the
    first ``top_k`` of them, and greedy NMS keeps each one whose IoU with every kept box is
    at most the threshold (lowered by ``eta`` after each keep while above 0.5). Then the
    ``keep_top_k`` best of the image's detections stay. An image set without detections
    gives one row of -1 per image, its index first.
    """

    def __init__(self, config: DetectionConfig, where: str):
        super().__init__()
        self.config, self.where = config, where

    def extra_repr(self) -> str:
        return repr(self.config)

    def forward(self, loc: torch.Tensor, conf: torch.Tensor, priors: torch.Tensor):
        if exporting():
            return self._traced(loc, conf, priors)
        c = self.config
        images = loc.shape[0]
        count = priors.shape[-1] // 4
        prior_boxes = priors[0, 0].reshape(count, 4)
        variances = priors[0, 1].reshape(count, 4)
        loc = loc.reshape(images, count, c.loc_classes, 4)
        conf = conf.reshape(images, count, c.num_classes)
        rows = []
        for image in range(images):
            boxes = self._decode(loc[image], prior_boxes, variances)  # (P, loc_classes, 4)
            found = []  # (score, label, prior) of every detection of this image
            for label in range(c.num_classes):
                if label == c.background_label_id:
                    continue
                scores = conf[image, :, label]
                label_boxes = boxes[:, 0 if c.share_location else label]
                for prior in self._keep(label_boxes, scores):
                    found.append((scores[prior].item(), label, prior))
            if c.keep_top_k > -1 and len(found) > c.keep_top_k:
                ranked = sorted(found, key=lambda item: -item[0])  # stable: ties keep order
                found = ranked[: c.keep_top_k]
            # by label, each label's detections best first (NMS order keeps that)
            found.sort(key=lambda item: (item[1], -item[0]))
            for score, label, prior in found:
                box = boxes[prior, 0 if c.share_location else label]
                rows.append(torch.cat([loc.new_tensor([image, label, score]), box]))
        if not rows:
            empty = loc.new_full((images, 7), -1.0)
            empty[:, 0] = torch.arange(images, dtype=loc.dtype, device=loc.device)
            return empty[None, None]
        return torch.stack(rows)[None, None]

    def _decode(self, loc: torch.Tensor, priors: torch.Tensor, variances: torch.Tensor):
        """Boxes (P, loc_classes, 4) from the predicted offsets and the priors."""
        c = self.config
        if c.variance_encoded_in_target:
            variances = torch.ones_like(variances)
        priors, variances = priors[:, None, :], variances[:, None, :]
        if c.code_type == CORNER:
            return priors + variances * loc
        size = priors[..., 2:] - priors[..., :2]  # prior width, height
        if not exporting() and (size <= 0).any():  # a check on values: eager only
            raise ConverterError(f"{self.where}: a prior has no width or height")
        if c.code_type == CENTER_SIZE:
            center = (
                variances[..., :2] * loc[..., :2] * size + (priors[..., :2] + priors[..., 2:]) / 2
            )
            extent = torch.exp(variances[..., 2:] * loc[..., 2:]) * size
            return torch.cat([center - extent / 2, center + extent / 2], dim=-1)
        return priors + variances * loc * size.repeat(1, 1, 2)  # CORNER_SIZE

    def _keep(self, boxes: torch.Tensor, scores: torch.Tensor) -> list[int]:
        """The priors one class keeps, in NMS order (best first)."""
        c = self.config
        if not c.nms:  # this fork skips NMS (and the threshold) without nms_param
            return list(range(len(scores)))
        candidates = torch.nonzero(scores > c.confidence_threshold).flatten()
        order = torch.sort(scores[candidates], descending=True, stable=True).indices
        candidates = candidates[order]
        if c.top_k > -1:
            candidates = candidates[: c.top_k]
        overlap = _iou_matrix(boxes[candidates]).tolist()
        kept: list[int] = []  # positions in candidates
        threshold = c.nms_threshold
        for i in range(len(candidates)):
            if all(overlap[i][j] <= threshold for j in kept):
                kept.append(i)
                if c.eta < 1 and threshold > 0.5:
                    threshold *= c.eta
        return [int(candidates[i]) for i in kept]

    def _traced(self, loc: torch.Tensor, conf: torch.Tensor, priors: torch.Tensor):
        """``forward``'s rows, computed with shapes ``torch.export`` can trace.

        Every image and class at once: the priors ranked by a stable descending sort of
        their scores (the eager path's candidate order, those above the threshold first),
        the first ``top_k`` kept as candidates, greedy NMS unrolled over those positions,
        ``keep_top_k`` by a second stable sort; the rows come out in (image, label,
        candidate) order, which is the eager path's order. Only the final selection of
        rows depends on the data. ``tests/test_standalone.py`` holds both paths equal.
        """
        c = self.config
        images, count = loc.shape[0], priors.shape[-1] // 4
        prior_boxes = priors[0, 0].reshape(count, 4)
        variances = priors[0, 1].reshape(count, 4)
        loc = loc.reshape(images, count, c.loc_classes, 4)
        conf = conf.reshape(images, count, c.num_classes)
        boxes = self._decode(loc, prior_boxes, variances)  # (N, P, loc_classes, 4)
        labels = [label for label in range(c.num_classes) if label != c.background_label_id]
        scores = conf[:, :, labels].transpose(1, 2)  # (N, labels, P)
        if c.share_location:
            label_boxes = boxes[:, None, :, 0].expand(-1, len(labels), -1, -1)
        else:
            label_boxes = boxes[:, :, labels].transpose(1, 2)  # (N, labels, P, 4)
        order = torch.sort(scores, dim=2, descending=True, stable=True).indices
        candidates = min(count, c.top_k) if c.nms and c.top_k > -1 else count
        if c.nms and candidates > MAX_TRACED_CANDIDATES:
            raise ConverterError(
                f"{self.where}: pt2 and ONNX trace NMS over at most {MAX_TRACED_CANDIDATES} "
                f"candidates per class (nms_param.top_k), this layer takes {candidates}; "
                "--format code runs it as it is"
            )
        order = order[:, :, :candidates]
        scores = scores.gather(2, order)
        label_boxes = label_boxes.gather(2, order[..., None].expand(-1, -1, -1, 4))
        if c.nms:
            kept = self._traced_nms(label_boxes, scores > c.confidence_threshold)
        else:  # no nms_param: every prior of every class, no threshold
            kept = torch.ones_like(scores, dtype=torch.bool)
        scores, kept = scores.flatten(1), kept.flatten(1)  # (N, labels * candidates)
        if c.keep_top_k > -1:  # the best kept, ties in (label, candidate) order
            ranked = torch.sort(scores, dim=1, descending=True, stable=True).indices
            in_rank_order = kept.gather(1, ranked)
            best = in_rank_order & (in_rank_order.cumsum(1) <= c.keep_top_k)
            kept = torch.zeros_like(kept).scatter(1, ranked, best)
        image = torch.arange(images, device=loc.device, dtype=loc.dtype)
        label = torch.tensor(labels, device=loc.device, dtype=loc.dtype)
        table = torch.cat(
            [
                image[:, None, None].expand(-1, scores.shape[1], 1),
                label.repeat_interleave(candidates)[None, :, None].expand(images, -1, 1),
                scores[..., None],
                label_boxes.reshape(images, -1, 4),
            ],
            dim=-1,
        ).reshape(-1, 7)
        found = kept.reshape(-1)
        empty = torch.cat([image[:, None], loc.new_full((images, 6), -1.0)], dim=1)
        nothing = ~found.any()
        rows = torch.cat([table, empty])[torch.cat([found, nothing.expand(images)])]
        return rows[None, None]

    def _traced_nms(self, boxes: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Greedy NMS over candidate positions (last axis of ``valid``), for every image
        and label at once: a valid candidate stays unless its IoU with a kept earlier one
        exceeds the threshold (compared as the eager path does, in float64)."""
        c = self.config
        overlap = _iou_matrix(boxes).double()  # (N, labels, K, K)
        threshold = torch.full(valid.shape[:2], c.nms_threshold, dtype=torch.float64)
        threshold = threshold.to(valid.device)
        position = torch.arange(valid.shape[-1], device=valid.device)
        kept = torch.zeros_like(valid)
        for i in range(valid.shape[-1]):
            keep = valid[..., i]
            if i:  # (ONNX's any() of nothing is not False)
                close = ~(overlap[..., i, :i] <= threshold[..., None])
                keep = keep & ~(close & kept[..., :i]).any(dim=-1)
            kept = kept | ((position == i) & keep[..., None])  # no bool Where in onnxruntime
            if c.eta < 1:
                threshold = torch.where(keep & (threshold > 0.5), threshold * c.eta, threshold)
        return kept


# NMS is unrolled over the candidates when traced: SSD's nets keep top_k 400 or fewer.
MAX_TRACED_CANDIDATES = 1024


def _iou_matrix(boxes: torch.Tensor) -> torch.Tensor:
    """Pairwise intersection over union of (..., K, 4) boxes, (..., K, K); 0 where they do
    not overlap."""
    low = torch.maximum(boxes[..., :, None, :2], boxes[..., None, :, :2])
    high = torch.minimum(boxes[..., :, None, 2:], boxes[..., None, :, 2:])
    sides = high - low
    overlapping = (sides > 0).all(dim=-1)
    intersection = sides.prod(dim=-1)
    extent = boxes[..., 2:] - boxes[..., :2]
    area = torch.where((extent >= 0).all(dim=-1), extent.prod(dim=-1), 0.0)
    union = area[..., :, None] + area[..., None, :] - intersection
    return torch.where(overlapping, intersection / union, 0.0)
