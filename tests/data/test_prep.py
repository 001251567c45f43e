"""prepare_images: one resize to the patch grid, by one rounding rule, checked against float64 arithmetic."""
from __future__ import annotations

from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F

from wrcup.data.prep import grid_shape, prepare_images


def _nearest_multiple(side: int, scale: Fraction, p: int) -> int:
    """p · max(1, ⌊side·scale/p + 1/2⌋) in exact rational arithmetic (the documented rule)."""
    return p * max(1, int(side * scale / p + Fraction(1, 2)))


def test_the_rule_for_the_documented_example_and_exact_halves():
    assert grid_shape(480, 640, 14, 448) == (448, 602)  # 640·448/480 = 597.3 → 42.67 patches → 43
    assert grid_shape(448, 854, 14, 224) == (224, 434)  # 854·224/448 = 427 = 30.5 patches: halves round up
    assert grid_shape(230, 300, 14) == (224, 294)  # no short side: each side to its nearest multiple
    assert grid_shape(1, 1, 14, 28) == (28, 28) and grid_shape(3, 5, 14) == (14, 14)  # at least one patch


@pytest.mark.parametrize("p", [14, 16])
def test_grid_shape_equals_exact_rational_arithmetic(p):
    g = torch.Generator().manual_seed(0)
    for H, W, short in torch.randint(1, 3000, (400, 3), generator=g).tolist():
        scale = Fraction(short, min(H, W))
        assert grid_shape(H, W, p, short) == (_nearest_multiple(H, scale, p), _nearest_multiple(W, scale, p))
        assert grid_shape(H, W, p) == (_nearest_multiple(H, Fraction(1), p), _nearest_multiple(W, Fraction(1), p))


def test_max_side_caps_the_longer_side_of_elongated_images_only():
    assert grid_shape(100, 2000, 14, 448, max_side=1792) == (84, 1792)  # the documented strip
    assert grid_shape(480, 640, 14, 448, max_side=1792) == grid_shape(480, 640, 14, 448)  # 4:3 is untouched
    assert grid_shape(20, 2000, 14, 448, max_side=1792) == (14, 1792)  # at least one patch
    assert grid_shape(3000, 100, 14, None, max_side=1400) == (42, 1400)[::-1]  # no short side: only the cap


@pytest.mark.parametrize("p", [14, 16])
def test_grid_shape_with_max_side_equals_exact_rational_arithmetic(p):
    g = torch.Generator().manual_seed(1)
    for H, W, short, cap in torch.randint(1, 3000, (400, 4), generator=g).tolist():
        for short_side in (short, None):
            scale = Fraction(1) if short_side is None else Fraction(short_side, min(H, W))
            scale = min(scale, Fraction(cap, max(H, W)))
            want = (_nearest_multiple(H, scale, p), _nearest_multiple(W, scale, p))
            assert grid_shape(H, W, p, short_side, max_side=cap) == want


def test_min_patches_raises_the_floor_of_each_side():
    assert grid_shape(20, 2000, 14, 448, max_side=1792) == (14, 1792)
    assert grid_shape(20, 2000, 14, 448, max_side=1792, min_patches=2) == (28, 1792)
    assert grid_shape(5, 5, 14, min_patches=2) == (28, 28)
    assert grid_shape(480, 640, 14, 448, min_patches=2) == (448, 602)  # inactive above the floor


def test_prepare_images_applies_max_side():
    strip = torch.rand(3, 100, 2000)
    assert prepare_images(strip, 14, 448, max_side=1792).shape == (3, 84, 1792)


def test_prepare_images_resizes_once_and_keeps_rank_dtype_and_sized_images():
    image = torch.rand(3, 480, 640, dtype=torch.float64)
    out = prepare_images(image, 14, 448)
    oracle = F.interpolate(image[None], size=(448, 602), mode="bilinear", antialias=True, align_corners=False)[0]
    assert out.dtype == torch.float64 and torch.equal(out, oracle)
    assert 0 <= float(out.min()) and float(out.max()) <= 1  # a convex combination of the pixels
    batch = torch.rand(2, 3, 28, 42)
    assert prepare_images(batch, 14) is batch and prepare_images(batch, 14, 28) is batch
