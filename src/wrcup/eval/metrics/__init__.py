"""Evaluation metrics (pure functions on numpy arrays or torch tensors; CPU, float64 accumulation), by concern:
DAVIS J&F (:mod:`.davis`), and segmentation, boxes, keypoints and depth (:mod:`.scores`).

Conventions: masks are H×W (or ..×H×W) arrays, non-zero = foreground; boxes are [x0, y0, x1, y1] in pixel-edge
coordinates; points are (x, y). Scores are fractions in [0, 1], except :func:`davis_scores`, which reports
percentages as the DAVIS benchmark tables do.
"""
from .davis import (boundary_f_measure, boundary_map, boundary_scores, boundary_tolerance, davis_scores,
                    davis_sequence_scores, davis_summary, dilate, disk, region_similarity)
from .scores import ConfusionMatrix, abs_rel, box_iou, corloc, delta1, pck, rmse

__all__ = ["region_similarity", "boundary_map", "boundary_tolerance", "boundary_scores", "boundary_f_measure", "disk",
           "dilate", "davis_scores", "davis_sequence_scores", "davis_summary", "ConfusionMatrix", "box_iou", "corloc",
           "pck", "rmse", "abs_rel", "delta1"]
