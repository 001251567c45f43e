"""Feature fidelity statistics on hand-computed cases."""
import math

import pytest
import torch

from wrcup.eval.fidelity import feature_fidelity


def test_identity_scale_and_sign():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(2, 5, 4, 3, generator=g, dtype=torch.float64)
    same = feature_fidelity(t, t)
    assert same == pytest.approx({"cosine": 1.0, "nmse": 0.0, "nmse_global": 0.0, "mse": 0.0, "norm_ratio": 1.0},
                                 abs=1e-12)
    double = feature_fidelity(2 * t, t)      # ‖2t − t‖² / ‖t‖² = 1 at every pixel
    assert double["cosine"] == pytest.approx(1.0)
    assert double["nmse"] == pytest.approx(1.0) and double["nmse_global"] == pytest.approx(1.0)
    assert double["mse"] == pytest.approx(float(t.pow(2).mean())) and double["norm_ratio"] == pytest.approx(2.0)
    neg = feature_fidelity(-t, t)            # ‖−2t‖² / ‖t‖² = 4
    assert neg["cosine"] == pytest.approx(-1.0) and neg["nmse"] == pytest.approx(4.0)


def test_two_pixel_hand_case():
    # pixel 1: p = (1, 0), t = (1, 1): cos = 1/√2, err = 1, energy 2
    # pixel 2: p = (0, 3), t = (0, 1): cos = 1,    err = 4, energy 1
    p = torch.tensor([[[[1.0, 0.0]], [[0.0, 3.0]]]])   # 1×2×1×2
    t = torch.tensor([[[[1.0, 0.0]], [[1.0, 1.0]]]])
    got = feature_fidelity(p, t)
    assert got["cosine"] == pytest.approx((1 / math.sqrt(2) + 1) / 2)
    assert got["nmse"] == pytest.approx((1 / 2 + 4 / 1) / 2)
    assert got["nmse_global"] == pytest.approx(5 / 3)
    assert got["mse"] == pytest.approx(5 / 4)
    assert got["norm_ratio"] == pytest.approx((1 / math.sqrt(2) + 3) / 2)


def test_zero_vectors():
    p = torch.tensor([[[[0.0, 1.0]]]])   # 1×1×1×2: one channel, two pixels
    t = torch.tensor([[[[0.0, 2.0]]]])
    got = feature_fidelity(p, t)
    assert got["cosine"] == pytest.approx(0.5)  # zero pixel counts as cosine 0, the other as 1
    assert got["nmse"] == pytest.approx(0.25)   # the zero-energy pixel is left out
    assert got["nmse_global"] == pytest.approx(0.25)
    assert got["norm_ratio"] == pytest.approx(0.5)  # the zero-target pixel is left out, as for nmse


def test_pred_is_resized_bilinearly_to_the_target_grid():
    # a 1×2 ramp [0, 1] upsampled bilinearly (align_corners=False) to width 4 is [0, 0.25, 0.75, 1]
    p = torch.tensor([0.0, 1.0]).reshape(1, 1, 1, 2).double()
    t = torch.tensor([0.0, 0.25, 0.75, 1.0]).reshape(1, 1, 1, 4).double()
    got = feature_fidelity(p, t)
    assert got["mse"] == pytest.approx(0.0, abs=1e-15)
    # shrinking a constant map keeps it constant
    big = torch.full((1, 3, 8, 8), 2.0)
    small = torch.full((1, 3, 3, 3), 2.0)
    assert feature_fidelity(big, small)["nmse"] == pytest.approx(0.0, abs=1e-12)
    # unbatched input works the same way
    assert feature_fidelity(p[0], t[0]) == pytest.approx(got)


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="channels"):
        feature_fidelity(torch.randn(1, 3, 4, 4), torch.randn(1, 4, 4, 4))
    with pytest.raises(ValueError, match="rank"):
        feature_fidelity(torch.randn(3, 4, 4), torch.randn(1, 3, 4, 4))
    with pytest.raises(TypeError, match="target"):
        feature_fidelity(torch.randn(1, 3, 4, 4), torch.ones(1, 3, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="pred"):
        feature_fidelity(torch.full((1, 3, 4, 4), float("nan")), torch.randn(1, 3, 4, 4))
