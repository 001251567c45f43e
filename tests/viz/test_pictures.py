"""Feature PCA and similarity maps against direct computations."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from wrcup.viz import feature_pca, save_comparison_figure, similarity_map


def test_similarity_map_is_cosine_to_the_query_cell():
    f = torch.randn(8, 4, 6, dtype=torch.float64)
    # pixel centre of cell (row 2, col 3) in a 40×60 image with 10-px cells
    sim = similarity_map(f, (35.0, 25.0), (40, 60))
    expected = F.cosine_similarity(f, f[:, 2:3, 3:4], dim=0)
    torch.testing.assert_close(sim, expected.float(), rtol=1e-5, atol=1e-5)
    assert sim[2, 3] == pytest.approx(1.0, abs=1e-5)


def test_similarity_point_outside_raises():
    with pytest.raises(ValueError, match="outside the image"):
        similarity_map(torch.randn(3, 2, 2), (5, 99), (10, 10))


def test_pca_shares_one_basis_between_maps():
    low = torch.randn(16, 4, 4)
    high = F.interpolate(low[None], scale_factor=2, mode="nearest")[0]
    a, b = feature_pca(low, high)
    assert a.shape == (3, 4, 4) and b.shape == (3, 8, 8)
    assert a.min() >= 0 and a.max() <= 1
    # the same feature vector gets the same colour in both maps
    torch.testing.assert_close(F.interpolate(a[None], scale_factor=2, mode="nearest")[0], b)


def test_pca_rejects_mismatched_channels():
    with pytest.raises(ValueError, match="channel"):
        feature_pca(torch.randn(4, 2, 2), torch.randn(5, 2, 2))


def test_figure_is_a_png(tmp_path):
    path = save_comparison_figure(tmp_path / "f.png", torch.rand(3, 28, 42), torch.randn(8, 2, 3),
                                  torch.randn(8, 4, 6), (10, 5))
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_figure_without_a_point_leaves_out_the_similarity_maps(tmp_path):
    from PIL import Image

    args = (torch.rand(3, 28, 42), torch.randn(8, 2, 3), torch.randn(8, 4, 6))
    with_point = save_comparison_figure(tmp_path / "p.png", *args, (10, 5))
    without = save_comparison_figure(tmp_path / "n.png", *args, None)
    assert Image.open(without).width * 5 == pytest.approx(Image.open(with_point).width * 3, rel=0.02)
