"""Guided-filter upsampling: the last, non-learned step from a feature grid to pixel resolution.

The fast guided filter (He and Sun, 2015) fits, in every ``(2r+1)²`` window of the low-resolution grid, a ridge
regression of each feature channel on the guide's colour (``p ≈ aᵀ·I + b``, penalty ``eps·‖a‖²``), averages the
coefficients of the windows that cover each cell, enlarges the averaged ``a`` and ``b`` bilinearly to the output
size and applies them to the full-resolution guide there. Where the image is flat this is bilinear enlargement;
across an edge of the image the features change where the colour changes, instead of being smeared over the
enlargement factor. Windows are clipped at the borders (means over the cells inside).

The coefficients (:func:`guided_coefficients`) are small (``(k+1)·C`` maps on the low-resolution grid, ``k`` the
guide's channels) and the final step is pointwise (:func:`apply_guided`), so the output can be produced in pieces
(rows, channels) without ever holding it whole: :func:`wrcup.models.to_image.write_features_npy` does that.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .._checks import check_finite, check_tensor
from .closed_form import no_autocast

__all__ = ["guided_coefficients", "fit_guided", "fit_guided_at", "apply_guided", "guided_upsample", "GUIDED_RADIUS",
           "GUIDED_EPS", "GUIDED_BLOCK"]

# Chosen on the DAVIS dev frames (docs/RESULTS.md, "The last step to pixel resolution"): a colour guide, 3×3 windows, eps 1e-3
# on [0, 1] colours.
GUIDED_RADIUS = 1
GUIDED_EPS = 1e-3
# Channels fitted together: the fit's intermediates (several maps per channel) then stay a few blocks' size.
GUIDED_BLOCK = 32


def _box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over the (2r+1)² window around each cell, clipped at the borders: B×C×h×w → B×C×h×w."""
    k = 2 * radius + 1
    return F.avg_pool2d(x, k, stride=1, padding=radius, count_include_pad=False)


def _check_args(radius: int, eps: float) -> None:
    if isinstance(radius, bool) or not isinstance(radius, int) or radius < 0:
        raise ValueError(f"radius must be a non-negative int, got {radius!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"eps must be a positive number, got {eps!r}")


def guided_coefficients(features: torch.Tensor, guide: torch.Tensor, radius: int = GUIDED_RADIUS,
                        eps: float = GUIDED_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Window-averaged ridge coefficients of the features on the guide, on the features' grid.

    Args:
        features: B×C×h×w, float32 or float64.
        guide: B×k×h×w, the image resized to the grid (k = 3 for colour, 1 for grey; values in [0, 1]).
        radius: window half-size in cells (window (2r+1)², clipped at the borders).
        eps: ridge penalty on the slopes, in squared guide units; larger is smoother (closer to plain bilinear).
    Returns:
        ``(a, b)``: a B×C×k×h×w slopes, b B×C×h×w intercepts, each averaged over the windows covering the cell.
    """
    check_tensor(features, "features", 4)
    check_tensor(guide, "guide", 4)
    _check_args(radius, eps)
    if guide.shape[0] != features.shape[0] or guide.shape[-2:] != features.shape[-2:]:
        raise ValueError(f"guide must be B×k×h×w on the features' grid {tuple(features.shape[-2:])} with batch "
                         f"{features.shape[0]}, got shape {tuple(guide.shape)}")
    with no_autocast(features.device):  # the covariances and 3×3 solves need full precision
        B, C, h, w = features.shape
        k = guide.shape[1]
        guide = guide.to(features.dtype)
        mean_i = _box_mean(guide, radius)                                                    # B×k×h×w
        mean_p = _box_mean(features, radius)                                                 # B×C×h×w
        # window covariances: guide with guide (k×k, shared by every channel) and guide with features (k per channel)
        cov_ip = torch.stack([_box_mean(guide[:, i:i + 1] * features, radius) - mean_i[:, i:i + 1] * mean_p
                              for i in range(k)], dim=2)                                     # B×C×k×h×w
        pairs = torch.stack([guide[:, i] * guide[:, j] for i in range(k) for j in range(k)], dim=1)
        cov_ii = (_box_mean(pairs, radius).view(B, k, k, h, w)
                  - mean_i[:, :, None] * mean_i[:, None, :])                                 # B×k×k×h×w
        eye = torch.eye(k, dtype=features.dtype, device=features.device)
        system = cov_ii.permute(0, 3, 4, 1, 2) + eps * eye                                  # B×h×w×k×k, SPD
        # one k×k inverse per cell, shared by the C channels (a solve per channel would repeat it C times)
        a = torch.einsum("bhwij,bcjhw->bcihw", torch.linalg.inv(system), cov_ip)            # B×C×k×h×w
        b = mean_p - (a * mean_i[:, None]).sum(dim=2)
        a = _box_mean(a.reshape(B, C * k, h, w), radius).view(B, C, k, h, w)
        return a, _box_mean(b, radius)


def fit_guided(features: torch.Tensor, image: torch.Tensor, radius: int = GUIDED_RADIUS, eps: float = GUIDED_EPS,
               block: int = GUIDED_BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`guided_coefficients` with the guide made from ``image`` (B×k×H'×W', any size: resized with
    antialiasing to the features' grid), fitted in blocks of ``block`` channels. Same returns."""
    B, C, h, w = features.shape
    low = F.interpolate(image.to(features.dtype), size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    a = features.new_empty(B, C, image.shape[1], h, w)
    b = torch.empty_like(features)
    for c0 in range(0, C, block):
        a[:, c0:c0 + block], b[:, c0:c0 + block] = guided_coefficients(features[:, c0:c0 + block], low, radius, eps)
    return a, b


def apply_guided(a: torch.Tensor, b: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
    """``b + Σ_k a_k·guide_k`` per pixel: enlarged coefficients (a …×C×k×H×W, b …×C×H×W) on a guide …×k×H×W."""
    out = b.clone()
    for i in range(guide.shape[-3]):
        out.addcmul_(a[..., i, :, :], guide[..., i:i + 1, :, :])
    return out


def fit_guided_at(features: torch.Tensor, image: torch.Tensor, size: Sequence[int], radius: int = GUIDED_RADIUS,
                  eps: float = GUIDED_EPS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unchecked core of :func:`guided_upsample` up to the enlargement, shared with the gradient-free growth of
    :func:`wrcup.models.bundle.guided_last_step`: ``(a, b, guide)``, the coefficients of :func:`fit_guided` (a
    B×C×k×h×w, b B×C×h×w) and ``image`` at the output ``size`` (B×k×H×W, resized with antialiasing if needed).

    float16 and bfloat16 features are fitted in float32 (a, b and the guide then come back in float32).
    """
    if features.dtype not in (torch.float32, torch.float64):
        features = features.float()
    image = image.to(features.dtype)
    a, b = fit_guided(features, image, radius, eps)
    H, W = int(size[0]), int(size[1])
    high = image if tuple(image.shape[-2:]) == (H, W) else F.interpolate(
        image, size=(H, W), mode="bilinear", align_corners=False, antialias=True)
    return a, b, high


def guided_upsample(features: torch.Tensor, image: torch.Tensor, size: Sequence[int] | None = None,
                    radius: int = GUIDED_RADIUS, eps: float = GUIDED_EPS) -> torch.Tensor:
    """Features B×C×h×w → B×C×H×W guided by ``image`` (B×k×H'×W' in [0, 1], any size; resized with
    antialiasing to the grid for the coefficients and to the output for their application).

    ``size`` defaults to the image's own size. The output size must be at least the grid's in both directions
    (this is an enlargement; shrink with :func:`wrcup.models.sizing.resize_features`). float16 and bfloat16
    features are fitted in float32 and the result returned in their dtype; under ``torch.autocast`` the filter
    still computes in full precision.
    """
    check_tensor(features, "features", 4)
    check_tensor(image, "image", 4)
    check_finite(features, "features")
    check_finite(image, "image")
    if image.shape[0] != features.shape[0]:
        raise ValueError(f"image and features must have the same batch size, got image {tuple(image.shape)} and "
                         f"features {tuple(features.shape)}")
    H, W = (int(image.shape[-2]), int(image.shape[-1])) if size is None else (int(size[0]), int(size[1]))
    h, w = features.shape[-2:]
    if H < h or W < w:
        raise ValueError(f"size {H}×{W} is smaller than the features' grid {h}×{w}: guided_upsample only enlarges")
    a, b, high = fit_guided_at(features, image, (H, W), radius, eps)
    B, C, k = a.shape[:3]
    a_up = F.interpolate(a.reshape(B, C * k, h, w), size=(H, W), mode="bilinear", align_corners=False)
    b_up = F.interpolate(b, size=(H, W), mode="bilinear", align_corners=False)
    return apply_guided(a_up.view(B, C, k, H, W), b_up, high).to(features.dtype)
