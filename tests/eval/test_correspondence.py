"""Keypoint transfer by cosine nearest neighbour on synthetic feature maps with known answers."""
import pytest
import torch

from wrcup.eval.correspondence import sample_features, transfer_keypoints


def orthonormal_cells(n_cells, channels, seed):
    """n_cells mutually orthogonal unit feature vectors (rows)."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(channels, n_cells, generator=g, dtype=torch.float64))
    return q.T  # n_cells × channels


def test_sample_features_pixel_centre_convention():
    feats = torch.arange(12, dtype=torch.float64).reshape(1, 3, 4)  # one channel, value = cell index
    size = (30, 40)                                                 # cells of 10×10 pixels
    pts = torch.tensor([[15.0, 15.0],    # centre of cell (1, 1) -> 5
                        [20.0, 15.0],    # between cells (1, 1) and (1, 2) -> 5.5
                        [15.0, 20.0],    # between rows 1 and 2 -> (5 + 9) / 2
                        [17.5, 12.5],    # bilinear: 5 + 0.25 * 1 - 0.25 * 4
                        [0.0, 0.0]])     # outside the outermost centres: border value 0
    got = sample_features(feats, pts, size)[:, 0]
    torch.testing.assert_close(got, torch.tensor([5.0, 5.5, 7.0, 4.25, 0.0], dtype=torch.float64))


def test_identical_images_map_points_back_within_half_a_cell():
    h, w = 6, 8
    cells = orthonormal_cells(h * w, h * w, seed=0)
    feats = cells.T.reshape(h * w, h, w)
    size = (48, 64)  # 8×8-pixel cells
    g = torch.Generator().manual_seed(1)
    pts = torch.rand(50, 2, generator=g, dtype=torch.float64) * torch.tensor([64.0, 48.0])
    pred = transfer_keypoints(feats, feats, pts, size, size)
    assert pred.shape == (50, 2)
    assert bool(((pred - pts).abs() <= 4.0 + 1e-9).all())
    # and exactly the centre of the cell the point falls in
    want = (torch.floor(pts / 8.0) + 0.5) * 8.0
    torch.testing.assert_close(pred, want)


def test_shifted_feature_map_with_different_target_size():
    h, w, th, tw, dy, dx = 6, 8, 9, 12, 2, 3
    cells = orthonormal_cells(h * w + th * tw, h * w + th * tw, seed=2).float()
    src = cells[: h * w].T.reshape(-1, h, w)
    trg = cells[h * w:].T.reshape(-1, th, tw).clone()          # unrelated cells ...
    trg[:, dy:dy + h, dx:dx + w] = src                          # ... except a shifted copy of the source
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pts = torch.stack([(cols.flatten() + 0.5) * 8, (rows.flatten() + 0.5) * 8], dim=1)  # source 48×64
    pred = transfer_keypoints(src, trg, pts, (48, 64), (90, 120))                       # target 10-px cells
    want = torch.stack([(cols.flatten() + dx + 0.5) * 10, (rows.flatten() + dy + 0.5) * 10], dim=1).float()
    torch.testing.assert_close(pred, want)


def test_soft_argmax_lands_between_two_equal_matches():
    h, w = 5, 6
    cells = orthonormal_cells(h * w, h * w, seed=3)
    trg = cells.T.reshape(-1, h, w).clone()
    trg[:, 2, 4] = trg[:, 2, 3]                  # two neighbouring cells carry the same feature
    src = trg.clone()
    pt = torch.tensor([[3.5 * 10, 2.5 * 10]], dtype=torch.float64)  # centre of cell (2, 3); 10-px cells
    hard = transfer_keypoints(src, trg, pt, (50, 60), (50, 60))
    soft = transfer_keypoints(src, trg, pt, (50, 60), (50, 60), soft_argmax=True)
    assert hard[0, 1].item() == pytest.approx(25.0)
    assert hard[0, 0].item() in (35.0, 45.0)
    # the other cells are orthogonal (cos 0 vs 1): weight exp(-1/0.02) each, negligible
    assert soft[0].tolist() == pytest.approx([40.0, 25.0], abs=1e-12)


def test_soft_argmax_window_respects_borders():
    cells = orthonormal_cells(16, 16, seed=4)
    feats = cells.T.reshape(-1, 4, 4)
    pt = torch.tensor([[1.0, 1.0]])  # in the corner cell: window partly outside the grid
    soft = transfer_keypoints(feats, feats, pt, (8, 8), (8, 8), soft_argmax=True, soft_radius=2)
    assert soft[0].tolist() == pytest.approx([1.0, 1.0], abs=1e-9)


def test_bad_input_is_rejected():
    f = torch.randn(4, 3, 3)
    with pytest.raises(ValueError, match="channels"):
        transfer_keypoints(f, torch.randn(5, 3, 3), torch.zeros(1, 2), (9, 9), (9, 9))
    with pytest.raises(ValueError, match="src_points"):
        transfer_keypoints(f, f, torch.zeros(1, 3), (9, 9), (9, 9))
    with pytest.raises(TypeError, match="trg_size"):
        transfer_keypoints(f, f, torch.zeros(1, 2), (9, 9), 9)
    assert transfer_keypoints(f, f, torch.zeros(0, 2), (9, 9), (9, 9)).shape == (0, 2)
