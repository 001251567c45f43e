"""wrcup.models.sizing: the pass plan, the requested size, and the final resize against a float64 oracle."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wrcup.models.sizing import MAX_PASSES, plan_passes, resize_features, resolve_output_size


@pytest.mark.parametrize("grid, target, passes", [
    ((32, 43), (64, 86), 1),      # today's default: one pass, exact
    ((32, 43), (448, 597), 4),    # a 448×597 photo's own size: 512×688, then down
    ((16, 16), (16, 16), 0),      # the grid itself
    ((10, 10), (3, 3), 0),        # smaller than the grid
    ((16, 16), (17, 16), 1),      # one direction decides
    ((8, 12), (16, 25), 2),       # 24 < 25 wide: one more pass
    ((1, 100), (50, 100), 6),     # extreme aspect ratio
    ((3, 5), (45, 70), 4),
])
def test_plan_passes_examples(grid, target, passes):
    assert plan_passes(grid, target) == passes


def test_plan_passes_is_the_fewest_that_reach_the_target():
    rng = np.random.default_rng(0)
    for _ in range(500):
        h, w = (int(v) for v in rng.integers(1, 60, size=2))
        H, W = (int(v) for v in rng.integers(1, 2000, size=2))
        n = plan_passes((h, w), (H, W))
        assert (2**n) * h >= H and (2**n) * w >= W
        assert n == 0 or (2 ** (n - 1)) * h < H or (2 ** (n - 1)) * w < W


@pytest.mark.parametrize("bad", [(0, 4), (4, -1), (4,), (True, 4), (4.0, 4), "ab", 4])
def test_plan_passes_rejects_bad_sizes(bad):
    with pytest.raises(ValueError, match="target_hw must be a pair of positive ints"):
        plan_passes((4, 4), bad)


def test_resolve_output_size_accepted_forms():
    grid, image = (32, 43), (448, 597)
    assert resolve_output_size(grid, image) == (64, 86)
    assert resolve_output_size(grid, image, scale=2) == (64, 86)
    assert resolve_output_size(grid, image, scale=4) == (128, 172)
    assert resolve_output_size(grid, image, scale=8) == (256, 344)
    assert resolve_output_size(grid, image, scale="image") == (448, 597)
    assert resolve_output_size(grid, image, output_size=(37, 1001)) == (37, 1001)
    assert resolve_output_size(grid, image, output_size=torch.Size([5, 6])) == (5, 6)
    assert resolve_output_size(grid, image, output_size=[np.int64(7), np.int64(9)]) == (7, 9)


@pytest.mark.parametrize("kwargs, match", [
    (dict(scale=3), "scale must be one of 2, 4, 8, 'image'"),
    (dict(scale=2.0), "scale must be one of"),
    (dict(scale=True), "scale must be one of"),
    (dict(scale="Image"), "scale must be one of"),
    (dict(scale=16), "use output_size"),
    (dict(output_size=(0, 5)), "output_size must be a pair of positive ints"),
    (dict(output_size=(5,)), "output_size must be a pair"),
    (dict(output_size=5), "output_size must be a pair"),
    (dict(output_size=(2.5, 3)), "output_size must be a pair"),
    (dict(output_size="64x86"), "output_size must be a pair"),
    (dict(output_size=(64, 86), scale=2), "output_size or scale, not both"),
    (dict(output_size=(32 * 2**MAX_PASSES + 1, 8)), f"at most {MAX_PASSES}"),
])
def test_resolve_output_size_errors_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        resolve_output_size((32, 43), (448, 597), **kwargs)


def _triangle_resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """n_out × n_in float64 weights: the triangle (linear) filter widened by the shrink factor (antialiasing),
    centred on each output pixel's centre in input coordinates, rows normalised to 1. Growing: plain linear
    interpolation between pixel centres, edges clamped."""
    s = n_in / n_out
    width = max(s, 1.0)
    centre = (np.arange(n_out) + 0.5) * s                        # output centres, input pixel units
    taps = np.arange(n_in) + 0.5                                 # input centres
    weights = np.clip(1 - np.abs(taps[None, :] - centre[:, None]) / width, 0, None)
    return weights / weights.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("size_in, size_out", [
    ((64, 86), (45, 61)),     # shrink both, non-integer factors
    ((128, 172), (37, 51)),   # shrink by > 3
    ((64, 86), (64, 30)),     # one direction only
    ((16, 24), (37, 51)),     # grow (plain bilinear)
    ((16, 24), (9, 51)),      # shrink one, grow the other
])
def test_resize_features_matches_a_float64_oracle_and_torch_bilinear(size_in, size_out):
    x = torch.randn(2, 5, *size_in, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = resize_features(x, size_out)
    assert out.shape == (2, 5, *size_out) and out.dtype == torch.float64
    A_h = _triangle_resize_matrix(size_in[0], size_out[0])
    A_w = _triangle_resize_matrix(size_in[1], size_out[1])
    oracle = np.einsum("ih,bchw,jw->bcij", A_h, x.numpy(), A_w)
    np.testing.assert_allclose(out.numpy(), oracle, rtol=0, atol=1e-12)
    torch.testing.assert_close(out, F.interpolate(x, size=size_out, mode="bilinear", align_corners=False,
                                                  antialias=True), rtol=0, atol=1e-12)
    if size_out[0] >= size_in[0] and size_out[1] >= size_in[1]:   # growing: antialiasing changes nothing
        torch.testing.assert_close(out, F.interpolate(x, size=size_out, mode="bilinear", align_corners=False),
                                   rtol=0, atol=1e-12)


def test_resize_features_keeps_a_tensor_of_the_right_size():
    x = torch.randn(1, 3, 8, 9)
    assert resize_features(x, (8, 9)) is x
