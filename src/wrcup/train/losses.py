"""Self-supervised training losses (recipe: docs/DESIGN.md).

Every loss is the same criterion, :func:`cosine_minmax_loss`, applied to a different (prediction, target) pair:
- local: windows of the 2× prediction against the backbone's features of aligned crops of the high-res view;
- global: the 2× prediction against the bilinear 2× upsampling of the low-res view's features;
- consistency: the prediction from the augmented guidance image against the one from the clean image.
Targets are constants: they are detached inside the criterion.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .._checks import check_tensor

__all__ = ["cosine_minmax_loss", "local_crop_loss", "global_loss", "consistency_loss"]

# Floor of the target's per-pixel channel range in the min-max normalisation (a constant pixel would divide by 0).
MINMAX_EPS = 1e-6


def _check_pair(pred: torch.Tensor, target: torch.Tensor, pred_name: str, target_name: str) -> None:
    check_tensor(pred, pred_name, 4)
    check_tensor(target, target_name, 4)
    if pred.shape != target.shape:
        raise ValueError(f"{pred_name} and {target_name} must have the same shape, got {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}")


def cosine_minmax_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cosine-embedding loss over channels + MSE after min-max normalisation by the target. Scalar.

    pred, target: B×C×H×W (target treated as a constant).
    - cosine term: mean over the B·H·W pixels of 1 − cos(pred[:, :, i, j], target[:, :, i, j])
      (``nn.CosineEmbeddingLoss`` with label +1);
    - MSE term: with m, M the target's per-pixel min and max over channels, the mean over all B·C·H·W elements
      of ((pred − m)/(M − m) − (target − m)/(M − m))², the range floored at ``MINMAX_EPS``.
    """
    _check_pair(pred, target, "pred", "target")
    target = target.detach()
    cosine = (1 - F.cosine_similarity(pred, target, dim=1)).mean()
    low = target.amin(dim=1, keepdim=True)
    span = (target.amax(dim=1, keepdim=True) - low).clamp_min(MINMAX_EPS)
    mse = F.mse_loss((pred - low) / span, (target - low) / span)
    return cosine + mse


def local_crop_loss(pred_hr: torch.Tensor, crop_targets: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Criterion between windows of the high-res prediction and backbone features of crops. Scalar.

    Args:
        pred_hr: B×C×Hh×Wh, the upsampler's prediction (32×32 for a 448 view and patch 14).
        crop_targets: B×n×C×h×w, backbone features of n crops per image (16×16 for 224 crops).
        boxes: B×n×2 integer (top, left) of each crop in HIGH-RES GRID TOKEN units (pixels / patch size);
            the window pred_hr[b, :, top:top+h, left:left+w] is compared with crop_targets[b, i].
    The mean over the B·n windows (all the same size) of :func:`cosine_minmax_loss`.
    """
    check_tensor(pred_hr, "pred_hr", 4)
    check_tensor(crop_targets, "crop_targets", 5)
    check_tensor(boxes, "boxes", 3, floating=False)
    B, C, Hh, Wh = pred_hr.shape
    if crop_targets.shape[0] != B or crop_targets.shape[2] != C:
        raise ValueError(f"crop_targets must be B×n×C×h×w with B={B}, C={C} (from pred_hr {tuple(pred_hr.shape)}), "
                         f"got {tuple(crop_targets.shape)}")
    n, (h, w) = crop_targets.shape[1], crop_targets.shape[-2:]
    if tuple(boxes.shape) != (B, n, 2) or boxes.is_floating_point() or boxes.is_complex():
        raise ValueError(f"boxes must be an integer tensor of shape ({B}, {n}, 2), got {boxes.dtype} {tuple(boxes.shape)}")
    if n == 0:
        raise ValueError("crop_targets has no crops (n = 0)")
    corners = boxes.tolist()
    windows = []
    for b in range(B):
        for i, (top, left) in enumerate(corners[b]):
            if top < 0 or left < 0 or top + h > Hh or left + w > Wh:
                raise ValueError(f"boxes[{b}, {i}] = ({top}, {left}) puts a {h}×{w} window outside the "
                                 f"{Hh}×{Wh} prediction grid (boxes are in high-res token units)")
            windows.append(pred_hr[b, :, top:top + h, left:left + w])
    return cosine_minmax_loss(torch.stack(windows), crop_targets.reshape(B * n, C, h, w))


def global_loss(pred_hr: torch.Tensor, target_lo: torch.Tensor) -> torch.Tensor:
    """Criterion between the prediction and the bilinear 2× (align_corners=False) of low-res features. Scalar.

    pred_hr: B×C×2h×2w; target_lo: B×C×h×w (the backbone features the upsampler was given).
    """
    check_tensor(pred_hr, "pred_hr", 4)
    check_tensor(target_lo, "target_lo", 4)
    B, C, h, w = target_lo.shape
    if tuple(pred_hr.shape) != (B, C, 2 * h, 2 * w):
        raise ValueError(f"pred_hr must have shape {(B, C, 2 * h, 2 * w)} (2× target_lo {tuple(target_lo.shape)}), "
                         f"got {tuple(pred_hr.shape)}")
    target = F.interpolate(target_lo.detach(), scale_factor=2, mode="bilinear", align_corners=False)
    return cosine_minmax_loss(pred_hr, target)


def consistency_loss(pred_aug: torch.Tensor, pred_clean: torch.Tensor) -> torch.Tensor:
    """Criterion between the prediction from the augmented image and the (detached) one from the clean image.

    pred_aug, pred_clean: B×C×H×W. Gradients flow through ``pred_aug`` only. Scalar.
    """
    _check_pair(pred_aug, pred_clean, "pred_aug", "pred_clean")
    return cosine_minmax_loss(pred_aug, pred_clean.detach())
