"""Segmentation (confusion matrix), boxes (IoU, CorLoc), keypoints (PCK) and depth (RMSE, abs rel, δ1)."""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch

from ._inputs import _as_tensor


# ----------------------------------------------------------------------------------------- segmentation
class ConfusionMatrix:
    """Accumulates a num_classes × num_classes pixel count matrix (rows = ground truth, columns = prediction).

    Pixels whose ground truth is ``ignore_index`` are skipped. Per-class IoU = TP / (TP + FP + FN); a class
    absent from both ground truth and predictions has an undefined (NaN) IoU, and mIoU is the mean over the
    classes that are defined (present in the ground truth or the predictions), as mmsegmentation computes it.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255):
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def reset(self) -> None:
        self.matrix.zero_()

    def update(self, pred, target) -> "ConfusionMatrix":
        """Add a batch: ``pred`` and ``target`` integer label maps of the same shape (any rank)."""
        p = _as_tensor(pred, "pred")
        t = _as_tensor(target, "target")
        if p.shape != t.shape:
            raise ValueError(f"pred and target must have the same shape, got {tuple(p.shape)} and {tuple(t.shape)}")
        if torch.is_floating_point(p) or torch.is_floating_point(t):
            raise TypeError("pred and target must be integer label maps (take the argmax of logits first)")
        # numpy: one single-threaded pass, no OpenMP start-up on a busy machine
        p = p.numpy().reshape(-1).astype(np.int64)
        t = t.numpy().reshape(-1).astype(np.int64)
        if self.ignore_index is not None:
            keep = t != self.ignore_index
            p, t = p[keep], t[keep]
        c = self.num_classes
        if t.size:
            if t.min() < 0 or t.max() >= c:
                raise ValueError(f"target values must lie in [0, {c}) or equal ignore_index={self.ignore_index}")
            if p.min() < 0 or p.max() >= c:
                raise ValueError(f"pred values must lie in [0, {c}) at non-ignored pixels")
            self.matrix += torch.from_numpy(np.bincount(t * c + p, minlength=c * c).reshape(c, c))
        return self

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes}-class into {self.num_classes}-class matrix")
        self.matrix += other.matrix
        return self

    def iou(self) -> torch.Tensor:
        """Per-class IoU, float64 (num_classes,), NaN for classes absent from ground truth and predictions."""
        m = self.matrix.double()
        tp = m.diag()
        union = m.sum(0) + m.sum(1) - tp
        return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))

    def miou(self) -> float:
        iou = self.iou()
        defined = ~torch.isnan(iou)
        return float(iou[defined].mean()) if defined.any() else float("nan")

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(self.matrix.diag().sum().double() / total) if total > 0 else float("nan")

    def class_accuracy(self) -> torch.Tensor:
        """Per-class recall TP / (TP + FN), NaN for classes absent from the ground truth."""
        m = self.matrix.double()
        support = m.sum(1)
        return torch.where(support > 0, m.diag() / support.clamp_min(1), torch.full_like(support, float("nan")))

    def compute(self) -> dict:
        acc = self.class_accuracy()
        defined = ~torch.isnan(acc)
        return {
            "mIoU": self.miou(),
            "pixel_accuracy": self.pixel_accuracy(),
            "mean_class_accuracy": float(acc[defined].mean()) if defined.any() else float("nan"),
            "per_class_iou": self.iou().tolist(),
        }


# ------------------------------------------------------------------------------------------ boxes, CorLoc
def _as_boxes(x, name: str) -> torch.Tensor:
    b = _as_tensor(x, name).double()
    if b.ndim == 1 and b.numel() == 4:
        b = b.reshape(1, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"{name} must be N×4 [x0, y0, x1, y1], got shape {tuple(b.shape)}")
    if bool((b[:, 2] < b[:, 0]).any() | (b[:, 3] < b[:, 1]).any()):
        raise ValueError(f"{name} has boxes with x1 < x0 or y1 < y0 (expected [x0, y0, x1, y1])")
    return b


def box_iou(boxes_a, boxes_b) -> torch.Tensor:
    """Pairwise IoU of N×4 and M×4 [x0, y0, x1, y1] boxes (area = (x1 − x0)(y1 − y0)); float64 N×M.

    A pair whose union has zero area gets IoU 0.
    """
    a, b = _as_boxes(boxes_a, "boxes_a"), _as_boxes(boxes_b, "boxes_b")
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    iw = (torch.minimum(a[:, None, 2], b[None, :, 2]) - torch.maximum(a[:, None, 0], b[None, :, 0])).clamp_min(0)
    ih = (torch.minimum(a[:, None, 3], b[None, :, 3]) - torch.maximum(a[:, None, 1], b[None, :, 1])).clamp_min(0)
    inter = iw * ih
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-300), torch.zeros_like(union))


def corloc(pred_boxes, gt_boxes_per_image: Sequence, iou_threshold: float = 0.5) -> float:
    """Correct localisation: share of images whose predicted box has IoU ≥ ``iou_threshold`` with at least one
    of that image's ground-truth boxes.

    Args:
        pred_boxes: one box per image, N×4 (or a sequence of 4-vectors; ``None`` = no prediction, a miss).
        gt_boxes_per_image: N entries of K_i×4 boxes. An image with no ground-truth box counts as a miss
            (LOST/TokenCut drop such images beforehand; see ``VOCDetectionDataset(drop_empty=True)``).
    """
    if isinstance(pred_boxes, (torch.Tensor, np.ndarray)):
        preds = list(_as_boxes(pred_boxes, "pred_boxes"))
    else:
        preds = list(pred_boxes)
    if len(preds) != len(gt_boxes_per_image):
        raise ValueError(f"{len(preds)} predicted boxes for {len(gt_boxes_per_image)} images")
    if not preds:
        raise ValueError("corloc needs at least one image")
    hits = 0
    for i, (pred, gts) in enumerate(zip(preds, gt_boxes_per_image)):
        if pred is None:
            continue
        gt = _as_tensor(gts, f"gt_boxes_per_image[{i}]")
        if gt.numel() == 0:
            continue
        if bool((box_iou(pred, gt) >= iou_threshold).any()):
            hits += 1
    return hits / len(preds)


# -------------------------------------------------------------------------------------------- keypoints
def pck(
    pred_points,
    gt_points,
    thresholds,
    alphas: Iterable[float] = (0.1,),
    valid=None,
    per_image: bool = True,
) -> dict[float, float]:
    """Percentage of correct keypoints: a point is correct when ‖pred − gt‖₂ ≤ α · L for its pair's length L.

    Args:
        pred_points, gt_points: per pair K_i×2 (x, y) points (a sequence of arrays, or B×K×2).
        thresholds: per pair length L (e.g. max(h, w) of the target object's box on SPair-71k), length B.
        alphas: the α values.
        valid: optional per-pair K_i bool masks of points to score (e.g. points visible in both images).
        per_image: True averages per-pair fractions over pairs (pairs without valid points are skipped);
            False pools all points.
    Returns:
        {α: fraction in [0, 1]}.
    """
    preds = [_as_tensor(p, "pred_points").double() for p in pred_points]
    gts = [_as_tensor(g, "gt_points").double() for g in gt_points]
    lengths = _as_tensor(thresholds, "thresholds").double().reshape(-1)
    if not (len(preds) == len(gts) == len(lengths)):
        raise ValueError(f"got {len(preds)} predicted, {len(gts)} ground-truth point sets and {len(lengths)} thresholds")
    valids = [None] * len(preds) if valid is None else [_as_tensor(v, "valid").bool() for v in valid]
    alphas = [float(a) for a in alphas]
    correct = {a: [] for a in alphas}
    counted = []
    for i, (p, g) in enumerate(zip(preds, gts)):
        if p.shape != g.shape or p.ndim != 2 or p.shape[-1] != 2:
            raise ValueError(f"pair {i}: points must be K×2 with equal shapes, got {tuple(p.shape)} and {tuple(g.shape)}")
        dist = torch.linalg.norm(p - g, dim=1)
        if valids[i] is not None:
            dist = dist[valids[i]]
        counted.append(dist.numel())
        for a in alphas:
            correct[a].append(int((dist <= a * lengths[i]).sum()))
    total = sum(counted)
    if total == 0:
        raise ValueError("pck: no keypoints to score")
    out = {}
    for a in alphas:
        if per_image:
            fractions = [c / n for c, n in zip(correct[a], counted) if n > 0]
            out[a] = float(np.mean(fractions))
        else:
            out[a] = sum(correct[a]) / total
    return out


# ------------------------------------------------------------------------------------------------- depth
def _depth_inputs(pred, gt, valid) -> tuple[torch.Tensor, torch.Tensor]:
    p = _as_tensor(pred, "pred").double()
    g = _as_tensor(gt, "gt").double()
    if p.shape != g.shape:
        raise ValueError(f"pred and gt must have the same shape, got {tuple(p.shape)} and {tuple(g.shape)}")
    mask = torch.isfinite(g) & (g > 0)
    if valid is not None:
        v = _as_tensor(valid, "valid")
        if v.shape != g.shape:
            raise ValueError(f"valid must have gt's shape {tuple(g.shape)}, got {tuple(v.shape)}")
        mask &= v.bool()
    if not bool(mask.any()):
        raise ValueError("no valid depth pixels (gt must be finite and > 0 where valid)")
    return p[mask], g[mask]


def rmse(pred, gt, valid=None) -> float:
    """Root mean squared error over valid pixels (gt finite and > 0, and ``valid`` if given), pooled."""
    p, g = _depth_inputs(pred, gt, valid)
    return float(torch.sqrt(((p - g) ** 2).mean()))


def abs_rel(pred, gt, valid=None) -> float:
    """Mean of |pred − gt| / gt over valid pixels."""
    p, g = _depth_inputs(pred, gt, valid)
    return float(((p - g).abs() / g).mean())


def delta1(pred, gt, valid=None, threshold: float = 1.25) -> float:
    """Share of valid pixels with max(pred / gt, gt / pred) < ``threshold`` (non-positive predictions fail)."""
    p, g = _depth_inputs(pred, gt, valid)
    ratio = torch.where(p > 0, torch.maximum(p / g, g / p.clamp_min(1e-300)), torch.full_like(p, float("inf")))
    return float((ratio < threshold).double().mean())


__all__ = ["ConfusionMatrix", "box_iou", "corloc", "pck", "rmse", "abs_rel", "delta1"]
