"""DAVIS J (region similarity) and F (boundary measure), per frame and as the benchmark's tables.

DAVIS J and F follow the definitions of the official DAVIS evaluation toolkits (2016 and 2017):

* J (region similarity) = |pred ∩ gt| / |pred ∪ gt|, and 1 when both masks are empty.
* F (boundary measure): each mask's boundary is the set of pixels whose value differs from that of their right,
  lower or lower-right neighbour, counting only neighbours inside the image (so a mask touching the image border
  has no boundary along the border, and the bottom-right pixel is never a boundary). Two boundaries match within
  a tolerance of ``bound_th`` pixels when ``bound_th >= 1``, otherwise ``ceil(bound_th · image diagonal)``
  pixels; matching dilates the other boundary with a disk of that radius (all offsets (dy, dx) with
  dy² + dx² ≤ r²). Precision = share of predicted boundary pixels within the dilated ground-truth boundary,
  recall = share of ground-truth boundary pixels within the dilated predicted boundary, F = 2PR / (P + R)
  (0 when P + R = 0). An empty predicted boundary gives P = 1, R = 0 if the ground truth has one; an empty
  ground-truth boundary gives P = 0, R = 1 if the prediction has one; both empty give P = R = 1.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import torch

from ._inputs import _as_array, _as_masks, _scalar_or_tensor


# ------------------------------------------------------------------------------------------------ DAVIS J
def _jaccard(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    inter = np.count_nonzero(p & g, axis=(-2, -1)).astype(np.float64)
    union = np.count_nonzero(p | g, axis=(-2, -1)).astype(np.float64)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def region_similarity(pred, gt, void=None) -> float | torch.Tensor:
    """DAVIS J: intersection over union of two binary masks (1 when both are empty).

    Args:
        pred, gt: (..., H, W) masks (non-zero = object).
        void: optional (..., H, W) mask of pixels left out of both intersection and union.
    Returns:
        float for H×W inputs, else a float64 tensor of the leading shape.
    """
    p, g, v = _as_masks(pred, gt, void)
    if v is not None:
        p, g = p & ~v, g & ~v
    return _scalar_or_tensor(_jaccard(p, g))


# ------------------------------------------------------------------------------------------------ DAVIS F
def _boundary(m: np.ndarray) -> np.ndarray:
    b = np.zeros_like(m)
    b[..., :, :-1] |= m[..., :, :-1] != m[..., :, 1:]  # right neighbour
    b[..., :-1, :] |= m[..., :-1, :] != m[..., 1:, :]  # lower neighbour
    b[..., :-1, :-1] |= m[..., :-1, :-1] != m[..., 1:, 1:]  # lower-right neighbour
    return b


def boundary_map(mask) -> torch.Tensor:
    """One-pixel-wide boundary of a (..., H, W) binary mask (the DAVIS rule, see the module docstring); bool."""
    m = _as_array(mask, "mask") != 0
    if m.ndim < 2:
        raise ValueError(f"mask must have shape (..., H, W), got {tuple(m.shape)}")
    return torch.from_numpy(_boundary(m))


def boundary_tolerance(shape: Sequence[int], bound_th: float = 0.008) -> int:
    """Matching radius in pixels for an (H, W) image: ``bound_th`` if ≥ 1 (an integer), else
    ``ceil(bound_th · sqrt(H² + W²))``."""
    if isinstance(bound_th, bool) or not (isinstance(bound_th, (int, float)) and bound_th > 0):
        raise ValueError(f"bound_th must be a positive number, got {bound_th!r}")
    if bound_th >= 1:
        if float(bound_th) != int(bound_th):
            raise ValueError(f"bound_th >= 1 is a pixel count and must be an integer, got {bound_th}")
        return int(bound_th)
    h, w = shape[-2], shape[-1]
    return int(math.ceil(bound_th * math.sqrt(h * h + w * w)))


def disk(radius: int) -> torch.Tensor:
    """(2r+1)×(2r+1) bool structuring element: offsets with dy² + dx² ≤ r²."""
    r = torch.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius**2


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    if radius == 0:
        return mask.copy()
    h, w = mask.shape[-2:]
    pad = [(0, 0)] * (mask.ndim - 1) + [(radius + 1, radius)]
    # count[..., i] = number of set pixels among the first i − 1 columns of the zero-padded row
    count = np.cumsum(np.pad(mask, pad).astype(np.int32), axis=-1)
    segments = {}
    out = np.zeros((*mask.shape[:-2], h + 2 * radius, w), dtype=bool)
    for dy in range(-radius, radius + 1):
        half = math.isqrt(radius * radius - dy * dy)
        if half not in segments:  # rows with the same half-width share one segment dilation
            # any set pixel in columns x − half .. x + half of the original row
            hi, lo = radius + 1 + half, radius - half
            segments[half] = (count[..., hi : hi + w] - count[..., lo : lo + w]) > 0
        # output row y takes segment row y + dy
        out[..., radius - dy : radius - dy + h, :] |= segments[half]
    return out[..., radius : radius + h, :]


def dilate(mask, radius: int) -> torch.Tensor:
    """Binary dilation of a (..., H, W) mask by :func:`disk` (pixels outside the image are background); bool.

    The disk is the union of horizontal segments, one per row offset dy, of half-width floor(sqrt(r² − dy²)).
    A segment dilation of a row is a windowed "any", read off a running count along the row, so the cost grows
    with r rather than r².
    """
    m = _as_array(mask, "mask") != 0
    if m.ndim < 2:
        raise ValueError(f"mask must have shape (..., H, W), got {tuple(m.shape)}")
    if isinstance(radius, bool) or not isinstance(radius, int) or radius < 0:
        raise ValueError(f"radius must be a non-negative int, got {radius!r}")
    return torch.from_numpy(np.ascontiguousarray(_dilate(m, radius)))


def _matched_counts(bp: np.ndarray, bg: np.ndarray, radius: int) -> tuple[int, int]:
    """(# of bp pixels within ``radius`` of bg, # of bg pixels within ``radius`` of bp) for H×W boundaries.

    Only the box around both boundaries matters: no boundary pixel lies outside it, so dilating inside the box
    (with background beyond it) gives the same counts at a fraction of the cost.
    """
    both = bp | bg
    rows = np.flatnonzero(both.any(axis=1))
    cols = np.flatnonzero(both.any(axis=0))
    if rows.size == 0:
        return 0, 0
    crop = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    bp, bg = bp[crop], bg[crop]
    p_match = int(np.count_nonzero(bp & _dilate(bg, radius)))
    g_match = int(np.count_nonzero(bg & _dilate(bp, radius)))
    return p_match, g_match


def _boundary_prf(p: np.ndarray, g: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lead = p.shape[:-2]
    bp = _boundary(p).reshape(-1, *p.shape[-2:])
    bg = _boundary(g).reshape(-1, *g.shape[-2:])
    n_p = np.count_nonzero(bp, axis=(-2, -1)).astype(np.float64)
    n_g = np.count_nonzero(bg, axis=(-2, -1)).astype(np.float64)
    p_match = np.zeros_like(n_p)
    g_match = np.zeros_like(n_g)
    for i in range(bp.shape[0]):
        if n_p[i] > 0 and n_g[i] > 0:
            p_match[i], g_match[i] = _matched_counts(bp[i], bg[i], radius)
    # An empty boundary matches nothing, so the ratios below already give P = 0 (or R = 0) against a non-empty
    # one; only the 0/0 cases need the toolkit's convention of 1.
    precision = np.where(n_p > 0, p_match / np.maximum(n_p, 1), 1.0)
    recall = np.where(n_g > 0, g_match / np.maximum(n_g, 1), 1.0)
    denom = precision + recall
    f = np.where(denom > 0, 2 * precision * recall / np.where(denom > 0, denom, 1.0), 0.0)
    return f.reshape(lead), precision.reshape(lead), recall.reshape(lead)


def boundary_scores(pred, gt, bound_th: float = 0.008, void=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DAVIS boundary F, precision and recall of (..., H, W) masks; float64 tensors of the leading shape.

    ``void`` pixels are cleared from both masks before their boundaries are taken (as the 2017 toolkit does).
    """
    p, g, v = _as_masks(pred, gt, void)
    if v is not None:
        p, g = p & ~v, g & ~v
    f, precision, recall = _boundary_prf(p, g, boundary_tolerance(p.shape, bound_th))
    return tuple(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)) for x in (f, precision, recall))


def boundary_f_measure(pred, gt, bound_th: float = 0.008, void=None) -> float | torch.Tensor:
    """DAVIS F (boundary F-measure) of (..., H, W) masks: float for H×W inputs, else float64 tensor."""
    p, g, v = _as_masks(pred, gt, void)
    if v is not None:
        p, g = p & ~v, g & ~v
    return _scalar_or_tensor(_boundary_prf(p, g, boundary_tolerance(p.shape, bound_th))[0])


def davis_scores(
    predictions: Mapping[str, Sequence | torch.Tensor | np.ndarray],
    ground_truth: Mapping[str, Sequence | torch.Tensor | np.ndarray],
    bound_th: float = 0.008,
    exclude_first_last: bool = True,
) -> dict:
    """DAVIS semi-supervised scores over sequences of object-id maps.

    Follows the official toolkits: a sequence's objects are ids 1..K with K the largest id in its first
    ground-truth frame (ground-truth 255 is treated as background); each object is scored per frame on the binary
    masks ``pred == k`` and ``gt == k``; the first frame (given as input) and the last frame are left out
    (``exclude_first_last``); an object's score is the mean over its frames, and J-Mean / F-Mean are means over
    all objects of all sequences (not over sequences). J&F-Mean = (J-Mean + F-Mean) / 2. Recall = share of an
    object's frames scoring above 0.5, averaged over objects.

    The same as :func:`davis_summary` of :func:`davis_sequence_scores` per sequence (a long evaluation keeps those
    per sequence and resumes; the summary is computed from them alone).

    Args:
        predictions, ground_truth: sequence name → T×H×W integer object-id maps (tensor, array, or a list of
            H×W maps). Every ground-truth sequence needs a prediction with the same T, H, W.
        bound_th: boundary tolerance (see :func:`boundary_tolerance`).
    Returns:
        ``{"J&F-Mean", "J-Mean", "F-Mean", "J-Recall", "F-Recall": float (percent), "per_object":
        {"<seq>_<k>": {"J", "F"}}, "per_sequence": {seq: {"J", "F", "J&F"}} (percent, means over the
        sequence's objects), "num_objects": int}``.
    """
    if not ground_truth:
        raise ValueError("ground_truth has no sequences")
    missing = [s for s in ground_truth if s not in predictions]
    if missing:
        raise ValueError(f"predictions lack sequences {missing[:5]}")
    return davis_summary({seq: davis_sequence_scores(predictions[seq], gt_seq, bound_th, exclude_first_last, seq)
                          for seq, gt_seq in ground_truth.items()})


def davis_sequence_scores(prediction, ground_truth, bound_th: float = 0.008, exclude_first_last: bool = True,
                          name: str = "sequence") -> np.ndarray:
    """One sequence's per-object scores, all that :func:`davis_summary` needs of it.

    Args:
        prediction, ground_truth: T×H×W integer object-id maps of one sequence (as in :func:`davis_scores`).
        name: the sequence's name, for error messages.
    Returns:
        float64 ``K×4``: per object 1..K (K = the largest id of the first ground-truth frame), the means over its
        frames of J and F and the shares of its frames with J > 0.5 and F > 0.5 (fractions, not percent).
    """
    gt = _stack_frames(ground_truth, f"ground_truth[{name!r}]")
    pred = _stack_frames(prediction, f"predictions[{name!r}]")
    if pred.shape != gt.shape:
        raise ValueError(f"sequence {name!r}: prediction shape {tuple(pred.shape)} != ground truth {tuple(gt.shape)}")
    gt = np.where(gt == 255, 0, gt)
    num_objects = int(gt[0].max())
    if exclude_first_last:
        if gt.shape[0] < 3:
            raise ValueError(f"sequence {name!r} has {gt.shape[0]} frames; excluding first and last needs >= 3")
        gt, pred = gt[1:-1], pred[1:-1]
    radius = boundary_tolerance(gt.shape, bound_th)
    rows = []
    for obj in range(1, num_objects + 1):
        g, p = gt == obj, pred == obj
        j_all = _jaccard(p, g)
        f_all = _boundary_prf(p, g, radius)[0]
        rows.append([float(j_all.mean()), float(f_all.mean()), float((j_all > 0.5).mean()),
                     float((f_all > 0.5).mean())])
    return np.array(rows, dtype=np.float64).reshape(num_objects, 4)


def davis_summary(sequence_scores: Mapping[str, np.ndarray]) -> dict:
    """The scores of :func:`davis_scores` from per-sequence :func:`davis_sequence_scores` (K×4 arrays), in the
    mapping's order (means over all objects of all sequences)."""
    if not sequence_scores:
        raise ValueError("sequence_scores has no sequences")
    per_object: dict[str, dict[str, float]] = {}
    per_sequence: dict[str, dict[str, float]] = {}
    j_means, f_means, j_recalls, f_recalls = [], [], [], []
    for seq, rows in sequence_scores.items():
        rows = np.asarray(rows, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != 4:
            raise ValueError(f"sequence_scores[{seq!r}] must be a K×4 array, got shape {rows.shape}")
        for obj, (j_mean, f_mean, j_recall, f_recall) in enumerate(rows.tolist(), start=1):
            per_object[f"{seq}_{obj}"] = {"J": 100 * j_mean, "F": 100 * f_mean}
            j_means.append(j_mean)
            f_means.append(f_mean)
            j_recalls.append(j_recall)
            f_recalls.append(f_recall)
        if len(rows):
            sj, sf = 100 * float(np.mean(rows[:, 0].tolist())), 100 * float(np.mean(rows[:, 1].tolist()))
            per_sequence[seq] = {"J": sj, "F": sf, "J&F": (sj + sf) / 2}
    if not j_means:
        raise ValueError("no objects found in the first ground-truth frames")
    j, f = 100 * float(np.mean(j_means)), 100 * float(np.mean(f_means))
    return {
        "J&F-Mean": (j + f) / 2,
        "J-Mean": j,
        "F-Mean": f,
        "J-Recall": 100 * float(np.mean(j_recalls)),
        "F-Recall": 100 * float(np.mean(f_recalls)),
        "per_object": per_object,
        "per_sequence": per_sequence,
        "num_objects": len(j_means),
    }


def _stack_frames(frames, name: str) -> np.ndarray:
    if isinstance(frames, (torch.Tensor, np.ndarray)):
        t = _as_array(frames, name)
    else:
        t = np.stack([_as_array(f, name) for f in frames])
    if t.ndim != 3:
        raise ValueError(f"{name} must be T×H×W object-id maps, got shape {tuple(t.shape)}")
    if not (np.issubdtype(t.dtype, np.integer) or t.dtype == np.bool_):
        raise TypeError(f"{name} must hold integer object ids, got {t.dtype}")
    return t.astype(np.int64, copy=False)


__all__ = ["region_similarity", "boundary_map", "boundary_tolerance", "boundary_scores", "boundary_f_measure",
           "disk", "dilate", "davis_scores"]
