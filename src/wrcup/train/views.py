"""Training views of one photo (recipe: docs/DESIGN.md): the 448 high-res view, the 224 low-res view, crops of it."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.images import center_crop, resize_short_side


def square_view(image: torch.Tensor, size: int) -> torch.Tensor:
    """3×H×W in [0, 1] → 3×size×size: shorter side resized to ``size`` (antialiased bilinear), centre crop."""
    return center_crop(resize_short_side(image, size), size).clamp(0, 1)


def downsample(images: torch.Tensor, size: int) -> torch.Tensor:
    """B×3×S×S → B×3×size×size (antialiased bilinear), the low-res view."""
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


def crop_images(images: torch.Tensor, boxes: torch.Tensor, crop: int) -> torch.Tensor:
    """images B×3×S×S, boxes B×n×2 (top, left) → (B·n)×3×crop×crop, image-major order."""
    out = [images[b, :, t:t + crop, l:l + crop] for b in range(images.shape[0]) for t, l in boxes[b].tolist()]
    return torch.stack(out)
