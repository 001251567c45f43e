"""wrcup.train.losses against hand-computed values and a straightforward float64 transcription."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from wrcup.train.losses import consistency_loss, cosine_minmax_loss, global_loss, local_crop_loss


def pixels(*vectors) -> torch.Tensor:
    """1×C×1×n map whose pixels are the given C-vectors."""
    return torch.tensor(vectors, dtype=torch.float64).T.reshape(1, len(vectors[0]), 1, len(vectors))


def oracle(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Pixel-by-pixel loops in float64 from the definition (cosine + min-max-normalised MSE, wrcup.train.losses)."""
    B, C, H, W = pred.shape
    cos_sum, sq_sum = 0.0, 0.0
    for b in range(B):
        for i in range(H):
            for j in range(W):
                p = [float(pred[b, c, i, j]) for c in range(C)]
                t = [float(target[b, c, i, j]) for c in range(C)]
                dot = sum(x * y for x, y in zip(p, t))
                cos_sum += 1 - dot / (math.sqrt(sum(x * x for x in p)) * math.sqrt(sum(y * y for y in t)))
                lo, hi = min(t), max(t)
                sq_sum += sum(((x - lo) / (hi - lo) - (y - lo) / (hi - lo)) ** 2 for x, y in zip(p, t))
    return cos_sum / (B * H * W) + sq_sum / (B * C * H * W)


def test_identical_inputs_give_zero():
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    assert float(cosine_minmax_loss(x, x)) == pytest.approx(0.0, abs=1e-12)


def test_orthogonal_unit_vectors_give_two():
    # cos = 0 → 1; target (0, 1) has min 0, max 1: (1, 0) vs (0, 1) → squared errors 1, 1 → MSE 1.
    assert float(cosine_minmax_loss(pixels([1, 0]), pixels([0, 1]))) == pytest.approx(2.0, abs=1e-12)


def test_minmax_example_by_hand():
    # target (1, 2, 3): min 1, range 2 → (0, .5, 1); pred (2, 2, 2) → (.5, .5, .5); MSE = (.25 + 0 + .25) / 3.
    # cos = 12 / (√14 · √12).
    expected = 1 - 12 / math.sqrt(14 * 12) + 1 / 6
    assert float(cosine_minmax_loss(pixels([2, 2, 2]), pixels([1, 2, 3]))) == pytest.approx(expected, abs=1e-12)


def test_two_pixels_average():
    loss = cosine_minmax_loss(pixels([1, 0], [2, 2]), pixels([0, 1], [1, 3]))
    # pixel 2: cos((2,2),(1,3)) = 8/(√8·√10); target (1,3): (0,1) vs pred (0.5,0.5) → errors .25, .25.
    cos_term = (1 + 1 - 8 / math.sqrt(80)) / 2
    mse_term = (1 + 1 + 0.25 + 0.25) / 4
    assert float(loss) == pytest.approx(cos_term + mse_term, abs=1e-12)


def test_matches_float64_transcription_on_random_maps():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(2, 6, 3, 2, generator=g, dtype=torch.float64)
    target = torch.randn(2, 6, 3, 2, generator=g, dtype=torch.float64)
    assert float(cosine_minmax_loss(pred, target)) == pytest.approx(oracle(pred, target), rel=1e-12)


def test_target_is_not_differentiated_and_constant_pixels_stay_finite():
    pred = torch.randn(1, 4, 2, 2, requires_grad=True)
    target = torch.randn(1, 4, 2, 2, requires_grad=True)
    cosine_minmax_loss(pred, target).backward()
    assert target.grad is None and pred.grad is not None
    flat = torch.ones(1, 4, 2, 2)
    assert bool(torch.isfinite(cosine_minmax_loss(torch.randn(1, 4, 2, 2), flat)))


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="pred and target must have the same shape"):
        cosine_minmax_loss(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 4))
    with pytest.raises(ValueError, match="pred must have 4 dimensions"):
        cosine_minmax_loss(torch.zeros(2, 3, 3), torch.zeros(2, 3, 3))


# ---------------------------------------------------------------------------------------------- local
def test_local_loss_windows_follow_the_boxes():
    g = torch.Generator().manual_seed(1)
    pred = torch.randn(2, 3, 6, 5, generator=g, dtype=torch.float64)
    boxes = torch.tensor([[[0, 0], [2, 1]], [[3, 2], [1, 3]]])  # (top, left), window 3×2
    exact = torch.stack([torch.stack([pred[b, :, t:t + 3, l:l + 2] for t, l in boxes[b].tolist()]) for b in range(2)])
    assert float(local_crop_loss(pred, exact, boxes)) == pytest.approx(0.0, abs=1e-12)

    targets = torch.randn(2, 2, 3, 3, 2, generator=g, dtype=torch.float64)
    by_hand = sum(oracle(pred[b:b + 1, :, t:t + 3, l:l + 2], targets[b, i:i + 1])
                  for b in range(2) for i, (t, l) in enumerate(boxes[b].tolist())) / 4
    assert float(local_crop_loss(pred, targets, boxes)) == pytest.approx(by_hand, rel=1e-12)

    shifted = boxes.clone()
    shifted[1, 0] = torch.tensor([2, 2])
    assert float(local_crop_loss(pred, exact, shifted)) > 0.01


def test_local_loss_rejects_bad_boxes():
    pred, targets = torch.zeros(1, 2, 4, 4), torch.zeros(1, 1, 2, 2, 2)
    with pytest.raises(ValueError, match="outside the 4×4 prediction grid"):
        local_crop_loss(pred, targets, torch.tensor([[[3, 0]]]))
    with pytest.raises(ValueError, match="boxes must be an integer tensor of shape \\(1, 1, 2\\)"):
        local_crop_loss(pred, targets, torch.tensor([[[0.0, 0.0]]]))
    with pytest.raises(ValueError, match="crop_targets must be B×n×C×h×w"):
        local_crop_loss(pred, torch.zeros(1, 1, 3, 2, 2), torch.tensor([[[0, 0]]]))


# --------------------------------------------------------------------------------------------- global
def test_global_loss_compares_with_bilinear_2x_of_the_target():
    g = torch.Generator().manual_seed(2)
    low = torch.randn(2, 4, 3, 5, generator=g, dtype=torch.float64)
    up = F.interpolate(low, scale_factor=2, mode="bilinear", align_corners=False)
    assert float(global_loss(up, low)) == pytest.approx(0.0, abs=1e-12)
    # a 1×1 target upsamples to a constant map: every pixel is the orthogonal (1,0) vs (0,1) case → 2
    pred = pixels([1, 0], [1, 0], [1, 0], [1, 0]).reshape(1, 2, 2, 2)
    assert float(global_loss(pred, pixels([0, 1]))) == pytest.approx(2.0, abs=1e-12)
    with pytest.raises(ValueError, match="pred_hr must have shape"):
        global_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 3, 3))


# ---------------------------------------------------------------------------------------- consistency
def test_consistency_gradient_flows_through_the_augmented_prediction_only():
    clean = torch.randn(1, 3, 2, 2, requires_grad=True)
    aug = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = consistency_loss(aug, clean)
    loss.backward()
    assert clean.grad is None and aug.grad is not None and aug.grad.abs().sum() > 0
    assert float(consistency_loss(clean.detach(), clean.detach())) == pytest.approx(0.0, abs=1e-6)
    assert loss.item() == pytest.approx(oracle(aug.detach().double(), clean.detach().double()), rel=1e-5)
