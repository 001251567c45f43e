"""Features at any output size: which size was asked for, how many 2× passes reach it, the final resize.

A target H×W is reached by repeating the trained 2× upsampler ``n`` times (:func:`plan_passes`: the fewest passes
whose grid 2ⁿ·h × 2ⁿ·w reaches or exceeds the target in both directions), then resizing to exactly H×W
(:func:`resize_features`: bilinear, antialiased, so the last step only ever shrinks or keeps the size).
"""
from __future__ import annotations

import operator
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["SCALES", "MAX_PASSES", "plan_passes", "resolve_output_size", "resize_features"]

# Accepted ``scale`` values: factors of the backbone grid, or "image" (the input image's own H×W).
SCALES = (2, 4, 8, "image")
# 2⁵ = 32× the backbone grid: more than any image needs at the patch sizes in use (an image is ≈ p× its grid),
# and a guard against a size typed in the wrong unit, whose features would not fit in memory.
MAX_PASSES = 5


def _check_size_pair(value, name: str) -> tuple[int, int]:
    """(height, width) of positive integers (Python, NumPy or 0-d tensor ints; not bools) → a tuple of ints."""
    try:
        if isinstance(value, (str, bytes)) or len(value) != 2 or any(isinstance(v, bool) for v in value):
            raise TypeError
        pair = (operator.index(value[0]), operator.index(value[1]))
    except TypeError:
        raise ValueError(f"{name} must be a pair of positive ints (height, width), got {value!r}") from None
    if min(pair) < 1:
        raise ValueError(f"{name} must be a pair of positive ints (height, width), got {value!r}")
    return pair


def plan_passes(grid_hw: Sequence[int], target_hw: Sequence[int]) -> int:
    """Fewest 2× passes ``n ≥ 0`` with ``2ⁿ·h ≥ H`` and ``2ⁿ·w ≥ W`` for grid (h, w) and target (H, W).

    Example: grid 32×43, target 448×597 → 4 (512×688, then resized down). A target no larger than the grid
    needs no pass.
    """
    h, w = _check_size_pair(grid_hw, "grid_hw")
    H, W = _check_size_pair(target_hw, "target_hw")
    n = 0
    while (h << n) < H or (w << n) < W:
        n += 1
    return n


def resolve_output_size(grid_hw: Sequence[int], image_hw: Sequence[int], output_size=None, scale=None) -> tuple[int, int]:
    """The output size (H, W) asked for by ``output_size`` or ``scale`` (default: twice the grid, ``scale=2``).

    Args:
        grid_hw: the backbone's token grid (h, w).
        image_hw: the input image's own size as given by the caller (before any resize to the patch).
        output_size: (H, W), positive ints, any aspect ratio.
        scale: 2, 4 or 8 (× the grid) or "image" (= ``image_hw``).
    Raises ValueError naming the argument for anything else, for both at once, and for sizes needing more than
    :data:`MAX_PASSES` passes.
    """
    h, w = _check_size_pair(grid_hw, "grid_hw")
    if output_size is not None and scale is not None:
        raise ValueError(f"pass output_size or scale, not both (got output_size={output_size!r}, scale={scale!r})")
    if output_size is not None:
        target = _check_size_pair(output_size, "output_size")
    elif scale is None:
        target = (2 * h, 2 * w)
    elif isinstance(scale, str) and scale == "image":
        target = _check_size_pair(image_hw, "image size")
    elif isinstance(scale, int) and not isinstance(scale, bool) and scale in SCALES:
        target = (scale * h, scale * w)
    else:
        raise ValueError(f"scale must be one of {', '.join(map(repr, SCALES))} (times the backbone grid, or the "
                         f"input image's own size); got {scale!r}; use output_size=(H, W) for any other size")
    n = plan_passes((h, w), target)
    if n > MAX_PASSES:
        raise ValueError(f"output size {target[0]}×{target[1]} needs {n} 2× passes from the backbone grid {h}×{w}; "
                         f"at most {MAX_PASSES} ({2 ** MAX_PASSES}×) are supported: ask for a smaller output_size")
    return target


def resize_features(features: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """B×C×h×w → B×C×H×W, bilinear (``align_corners=False``) with antialiasing, which acts only along the
    directions that shrink (growing is plain bilinear). Returned as is when it already has the size."""
    size = (int(size[0]), int(size[1]))
    if tuple(features.shape[-2:]) == size:
        return features
    return F.interpolate(features, size=size, mode="bilinear", align_corners=False, antialias=True)
