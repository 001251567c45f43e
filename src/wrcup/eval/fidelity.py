"""Feature fidelity: how close predicted (upsampled) features are to reference features.

All statistics are per pixel over the channel vector, then averaged over every pixel of every image:

- ``cosine``: mean of ``cos(p, t)`` (1 is perfect; pixels where either vector is zero count as cosine 0);
- ``nmse``: mean of ``‖p − t‖² / ‖t‖²``, each pixel's error normalised by its own target energy (pixels with
  ``‖t‖ = 0`` are left out; 0 is perfect, 1 is what predicting zeros scores);
- ``nmse_global``: ``Σ‖p − t‖² / Σ‖t‖²`` over all pixels, less sensitive to near-zero target pixels;
- ``mse``: mean over all elements of ``(p − t)²``;
- ``norm_ratio``: mean of ``‖p‖ / ‖t‖`` (pixels with ``‖t‖ = 0`` are left out): 1 when the predicted vectors have
  the target's length on average, above 1 when they are too long. Cosine ignores length; NMSE pays for it.

When the grids differ, ``pred`` is resized to the target's grid by bilinear interpolation
(``align_corners=False``, with antialiasing, which only acts when shrinking) before comparing.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .._checks import check_finite, check_tensor

__all__ = ["feature_fidelity"]


@torch.no_grad()
def feature_fidelity(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Compare predicted features with reference features.

    Args:
        pred: ``B×C×H×W`` (or ``C×H×W``) predicted features.
        target: ``B×C×H'×W'`` (or ``C×H'×W'``) reference features.
    Returns:
        dict of floats: ``cosine``, ``nmse``, ``nmse_global``, ``mse``, ``norm_ratio`` (see the module docstring).
    """
    check_tensor(pred, "pred", (3, 4))
    check_tensor(target, "target", (3, 4))
    check_finite(pred, "pred")
    check_finite(target, "target")
    if pred.ndim != target.ndim:
        raise ValueError(f"pred and target must have the same rank, got shapes {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")
    if pred.ndim == 3:
        pred, target = pred[None], target[None]
    if pred.shape[:2] != target.shape[:2]:
        raise ValueError(f"pred and target must agree in batch and channels, got shapes {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")
    dtype = torch.float64 if torch.float64 in (pred.dtype, target.dtype) else torch.float32
    pred = pred.to(dtype)
    target = target.to(device=pred.device, dtype=dtype)
    if pred.shape[-2:] != target.shape[-2:]:
        pred = F.interpolate(pred, size=target.shape[-2:], mode="bilinear", align_corners=False, antialias=True)

    err = (pred - target).pow(2).sum(dim=1)          # B × H × W
    energy = target.pow(2).sum(dim=1)
    p_norm = pred.norm(dim=1)
    t_norm = energy.sqrt()
    denom = p_norm * t_norm
    cosine = torch.where(denom > 0, (pred * target).sum(dim=1) / denom.clamp_min(torch.finfo(dtype).tiny),
                         torch.zeros_like(denom))
    has_energy = energy > 0
    if bool(has_energy.any()):
        nmse = (err[has_energy] / energy[has_energy]).mean()
        norm_ratio = (p_norm[has_energy] / t_norm[has_energy]).mean()
    else:
        nmse = norm_ratio = torch.tensor(float("nan"))
    total_energy = energy.sum()
    nmse_global = err.sum() / total_energy if total_energy > 0 else torch.tensor(float("nan"))
    return {
        "cosine": float(cosine.mean()),
        "nmse": float(nmse),
        "nmse_global": float(nmse_global),
        "mse": float(err.sum() / pred.numel()),
        "norm_ratio": float(norm_ratio),
    }
