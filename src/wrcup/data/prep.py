"""Images → backbone input: the one resize an image gets on its way to a ViT backbone.

Every path that feeds a backbone — ``wrcup upsample``, :class:`wrcup.models.bundle.UpsampledBackbone`,
:class:`wrcup.backbones.Backbone` and the evaluation tasks (:func:`wrcup.eval.extract.resize_to_grid`) — sizes
its images with :func:`prepare_images`, so an image is resampled once, by one rule:

* the size: with ``s = short_side / min(H, W)`` (``s = 1`` without a ``short_side``), lowered to
  ``max_side / max(H, W)`` when a ``max_side`` is given and ``max(H, W) · s`` exceeds it, each side becomes the
  multiple of the patch size p nearest to ``side · s``, halves rounded up, at least p:
  ``p · max(1, ⌊side · s / p + 1/2⌋)``, evaluated in integers (exact for every size). Example, p = 14 and
  ``short_side`` 448: a 480×640 photo → 448×602 (640 · 448/480 = 597.3 → 42.67 patches → 43); with
  ``max_side`` 1792 too, a 100×2000 strip → 84×1792 (s = 1792/2000; 100 · 0.896 = 89.6 → 6.4 patches → 6);
* the resampling: bilinear with antialiasing, ``align_corners=False``; an image that already has the size is
  returned as it is (the same tensor).

Normalisation (mean/std) is the backbone's, in one place: :meth:`wrcup.backbones.Backbone.normalise`. Values are
not checked here: callers check them once, at their public entry (:func:`wrcup._checks.check_image_values`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def grid_shape(height: int, width: int, patch_size: int, short_side: int | None = None,
               max_side: int | None = None, min_patches: int = 1) -> tuple[int, int]:
    """(H', W'), both multiples of ``patch_size``, that an H×W image is resized to (rule in the module docstring).

    ``max_side`` caps the longer side (before rounding to the grid), so that a very elongated image (a panorama,
    a strip) cannot blow the backbone's token count up: its shorter side then ends below ``short_side``.
    ``min_patches`` raises the floor of each side from one patch (e.g. 2 for an upsampler that needs a 2×2 grid);
    a side raised to it no longer keeps the image's aspect ratio.
    """
    p = patch_size
    if short_side is None and max_side is None:
        # floor(side/p + 1/2) in integers, so that a traced (symbolic) multiple of p provably passes through
        return tuple(p * max(min_patches, (2 * side + p) // (2 * p)) for side in (height, width))
    # the scale as an exact fraction num/den
    num, den = (1, 1) if short_side is None else (short_side, min(height, width))
    longest = max(height, width)
    if max_side is not None and longest * num > max_side * den:
        num, den = max_side, longest
    return tuple(p * max(min_patches, (2 * side * num + den * p) // (2 * den * p)) for side in (height, width))


def prepare_images(images: torch.Tensor, patch_size: int, short_side: int | None = None,
                   max_side: int | None = None, min_patches: int = 1) -> torch.Tensor:
    """B×3×H×W (or 3×H×W) floating images in [0, 1] → the same rank and dtype at :func:`grid_shape` (H, W):
    resized once (antialiased bilinear), or returned unchanged when they already have that size.

    ``short_side``: the length the shorter side is scaled to before rounding to the patch grid (e.g. 448); None
    keeps the size, only rounding each side to the nearest multiple of ``patch_size``. ``max_side``: the cap on the
    longer side and ``min_patches`` the floor of each side (see :func:`grid_shape`). The antialiased bilinear
    weights are non-negative and sum to one, so the output stays in the input's range (up to rounding).
    """
    size = grid_shape(images.shape[-2], images.shape[-1], patch_size, short_side, max_side, min_patches)
    if tuple(images.shape[-2:]) == size:
        return images
    batched = images if images.ndim == 4 else images[None]
    resized = F.interpolate(batched, size=size, mode="bilinear", align_corners=False, antialias=True)
    return resized if images.ndim == 4 else resized[0]
