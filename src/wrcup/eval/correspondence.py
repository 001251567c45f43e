"""Keypoint transfer by nearest-neighbour feature matching (SPair-71k protocol).

Coordinates are continuous pixel coordinates ``(x, y)`` with the origin at the image's top-left *corner*: pixel
``(i, j)`` covers ``[j, j + 1) × [i, i + 1)`` and its centre is ``(j + 0.5, i + 0.5)``. This is the convention of
``grid_sample(align_corners=False)``, so a feature grid of ``h × w`` cells spread over an ``H × W`` image has
cell ``(r, c)`` centred at ``((c + 0.5) W / w, (r + 0.5) H / h)``. Annotations given as integer pixel indices
(centre at the integer) differ by half a pixel, far below PCK thresholds at 448 px.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .._checks import check_finite, check_positive_int, check_tensor

__all__ = ["transfer_keypoints", "sample_features"]


def _check_size(size, name: str) -> tuple[int, int]:
    if not isinstance(size, (tuple, list, torch.Size)) or len(size) != 2:
        raise TypeError(f"{name} must be a (height, width) pair of ints, got {size!r}")
    for v in size:
        check_positive_int(v, name)
    return int(size[0]), int(size[1])


def sample_features(features: torch.Tensor, points: torch.Tensor, image_size) -> torch.Tensor:
    """Bilinearly interpolated features at pixel points.

    Args:
        features: ``C×h×w`` feature map covering an image of ``image_size = (H, W)``.
        points: ``N×2`` ``(x, y)`` pixel coordinates (corner origin, see the module docstring).
    Returns:
        ``N×C`` features; points outside the outermost cell centres take the border cells' values.
    """
    height, width = image_size
    xy = points.to(features.dtype)
    grid = torch.stack([2 * xy[:, 0] / width - 1, 2 * xy[:, 1] / height - 1], dim=-1)
    sampled = F.grid_sample(features[None], grid[None, :, None], mode="bilinear", padding_mode="border",
                            align_corners=False)
    return sampled[0, :, :, 0].T


def transfer_keypoints(src_features: torch.Tensor, trg_features: torch.Tensor, src_points: torch.Tensor,
                       src_size, trg_size, *, soft_argmax: bool = False, soft_temperature: float = 0.02,
                       soft_radius: int = 1) -> torch.Tensor:
    """Predict where source keypoints land in the target image by cosine nearest neighbour.

    Args:
        src_features: ``C×h×w`` features of the source image.
        trg_features: ``C×h'×w'`` features of the target image.
        src_points: ``N×2`` source keypoints ``(x, y)`` in source pixels.
        src_size, trg_size: ``(H, W)`` of the source and target images.
        soft_argmax: refine the match by a softmax-weighted mean of the cell centres in a
            ``(2 soft_radius + 1)²`` window around the best cell (off by default: plain nearest neighbour).
        soft_temperature: temperature of that softmax over cosine similarities.
        soft_radius: half-size of that window in cells.
    Returns:
        ``N×2`` float predicted ``(x, y)`` in target pixels: the centre of the best-matching target cell (or
        the refined position).
    """
    check_tensor(src_features, "src_features", 3)
    check_tensor(trg_features, "trg_features", 3)
    check_finite(src_features, "src_features")
    check_finite(trg_features, "trg_features")
    if src_features.shape[0] != trg_features.shape[0]:
        raise ValueError(f"src_features and trg_features must have the same channels, got "
                         f"{src_features.shape[0]} and {trg_features.shape[0]}")
    check_tensor(src_points, "src_points", 2, floating=False)
    if src_points.shape[-1] != 2:
        raise ValueError(f"src_points must be N×2 (x, y), got shape {tuple(src_points.shape)}")
    src_size = _check_size(src_size, "src_size")
    trg_size = _check_size(trg_size, "trg_size")
    if not (isinstance(soft_temperature, (int, float)) and soft_temperature > 0):
        raise ValueError(f"soft_temperature must be a positive number, got {soft_temperature!r}")
    check_positive_int(soft_radius, "soft_radius", minimum=0)

    dtype = torch.float64 if torch.float64 in (src_features.dtype, trg_features.dtype) else torch.float32
    src = src_features.to(dtype)
    trg = trg_features.to(device=src.device, dtype=dtype)
    points = src_points.to(device=src.device, dtype=dtype)
    _, h, w = trg.shape
    if len(points) == 0:
        return points.new_zeros(0, 2)

    queries = F.normalize(sample_features(src, points, src_size), dim=1)          # N × C
    cells = F.normalize(trg.reshape(trg.shape[0], -1), dim=0)                     # C × h'w'
    cos = queries @ cells                                                         # N × h'w'
    best = cos.argmax(dim=1)
    row, col = best // w, best % w
    if soft_argmax:
        offsets = torch.arange(-soft_radius, soft_radius + 1, device=src.device)
        rows = row[:, None, None] + offsets[None, :, None]                         # N × k × 1
        cols = col[:, None, None] + offsets[None, None, :]                         # N × 1 × k
        inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)               # N × k × k
        index = rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)
        window = cos.gather(1, index.flatten(1)).reshape(index.shape)
        weights = torch.softmax(window.masked_fill(~inside, float("-inf")).flatten(1) / soft_temperature, dim=1)
        weights = weights.reshape(index.shape)
        row_f = (weights * rows.to(dtype)).sum(dim=(1, 2))
        col_f = (weights * cols.to(dtype)).sum(dim=(1, 2))
    else:
        row_f, col_f = row.to(dtype), col.to(dtype)
    trg_h, trg_w = trg_size
    return torch.stack([(col_f + 0.5) * trg_w / w, (row_f + 0.5) * trg_h / h], dim=1)
