"""SPair-71k reader, OpenCV homography pair, and synthetic homography pairs."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from wrcup.data import (
    DatasetLayoutError,
    HomographyPair,
    SPairDataset,
    homography_from_points,
    keypoint_grid,
    project_points,
    read_opencv_matrix,
    synthetic_homography_pairs,
    warp_perspective,
)

H1TO3_TEXT = """<?xml version="1.0"?>
<opencv_storage>
<H13 type_id="opencv-matrix">
  <rows>3</rows>
  <cols>3</cols>
  <dt>d</dt>
  <data>
    1.0 0.0 6.0
    0.0 1.0 -1.0
    0.0 0.0 1.0 </data></H13>
</opencv_storage>
"""


def test_spair_fixture(tmp_path, fx):
    fx.write_rgb(tmp_path / "JPEGImages" / "cat" / "2008_000001.jpg")
    fx.write_rgb(tmp_path / "JPEGImages" / "cat" / "2008_000002.jpg", seed=3)
    fx.write_rgb(tmp_path / "JPEGImages" / "dog" / "2008_000003.jpg")
    pairs = tmp_path / "PairAnnotation" / "test"
    pairs.mkdir(parents=True)
    ann = {
        "src_imname": "2008_000001.jpg", "trg_imname": "2008_000002.jpg", "category": "cat",
        "src_kps": [[1, 2], [3, 4]], "trg_kps": [[2, 2], [5, 6]],
        "src_bndbox": [0, 0, 7, 5], "trg_bndbox": [1, 2, 4, 8],
    }
    (pairs / "000001-2008_000001-2008_000002:cat.json").write_text(json.dumps(ann))
    dog = dict(ann, src_imname="2008_000003.jpg", trg_imname="2008_000003.jpg", category="dog")
    (pairs / "000002-2008_000003-2008_000003:dog.json").write_text(json.dumps(dog))
    ds = SPairDataset(tmp_path, "test")
    assert len(ds) == 2
    item = ds[0]
    assert item["source_points"].tolist() == [[1, 2], [3, 4]] and item["target_points"].tolist() == [[2, 2], [5, 6]]
    # target box [1, 2, 4, 8]: width 3, height 6 → PCK length 6
    assert item["pck_threshold"] == 6.0 and item["category"] == "cat"
    assert item["source_image"].shape == (3, 8, 8) and item["target_path"].name == "2008_000002.jpg"
    only_dog = SPairDataset(tmp_path, "test", category="dog", load_images=False)
    assert len(only_dog) == 1 and "source_image" not in only_dog[0]
    with pytest.raises(DatasetLayoutError, match="PairAnnotation/trn"):
        SPairDataset(tmp_path, "train")


def test_read_opencv_matrix_and_fixture_pair(tmp_path, fx):
    (tmp_path / "H1to3p.xml").write_text(H1TO3_TEXT)
    H = read_opencv_matrix(tmp_path / "H1to3p.xml")
    assert H.dtype == torch.float64 and H.tolist() == [[1, 0, 6], [0, 1, -1], [0, 0, 1]]
    fx.write_rgb(tmp_path / "graf1.png", size=(16, 20))
    fx.write_rgb(tmp_path / "graf3.png", size=(16, 20), seed=5)
    pair = HomographyPair(tmp_path, grid_step=4)
    item = pair[0]
    # grid every 4 px from 2 up to size − 1 − 2: x ∈ {2, 6, 10, 14} (≤ 17), y ∈ {2, 6, 10} (≤ 13) → 12 points,
    # moved by (+6, −1)
    assert item["source_points"].shape == (12, 2)
    assert torch.allclose(item["target_points"], item["source_points"] + torch.tensor([6.0, -1.0]))
    # inside the 20-wide target needs x + 6 ≤ 19, false for x = 14 (3 points); y − 1 ≥ 0 always → 9 valid
    assert int(item["valid"].sum()) == 9
    assert len(pair) == 1
    with pytest.raises(DatasetLayoutError, match="H1to3p.xml"):
        (tmp_path / "H1to3p.xml").unlink()
        HomographyPair(tmp_path)


def _opencv_data_dir() -> Path | None:
    candidates = [
        os.environ.get("WRCUP_OPENCV_DATA", ""),
        Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "opencv-doc",
        "/usr/share/doc/opencv-doc/examples/data",
    ]
    for c in candidates:
        if c and (Path(c) / "H1to3p.xml").is_file():
            return Path(c)
    return None


def test_real_graffiti_pair():
    root = _opencv_data_dir()
    if root is None:
        pytest.skip("opencv-doc examples/data (graf1.png, graf3.png, H1to3p.xml) not found; set WRCUP_OPENCV_DATA")
    item = HomographyPair(root, grid_step=32)[0]
    assert item["source"].shape == (3, 640, 800)
    # the homography explains graf3: graf1 warped by H correlates with graf3 far better than graf1 itself
    warped = warp_perspective(item["source"], item["homography"]).mean(0)
    target = item["target"].mean(0)
    inside = warp_perspective(torch.ones(1, 640, 800), item["homography"])[0] > 0.999

    def ncc(a, b):
        a, b = a[inside] - a[inside].mean(), b[inside] - b[inside].mean()
        return float((a * b).sum() / (a.norm() * b.norm()))

    assert ncc(warped, target) > 0.6 and ncc(item["source"].mean(0), target) < 0.3


def test_homography_from_points_and_projection():
    src = torch.tensor([[0.0, 0.0], [9.0, 0.0], [9.0, 7.0], [0.0, 7.0]])
    dst = torch.tensor([[1.0, 0.5], [8.0, -0.5], [9.5, 8.0], [-0.5, 6.0]])
    H = homography_from_points(src, dst)
    assert H[2, 2] == 1.0
    assert torch.allclose(project_points(H, src), dst.double(), atol=1e-12)
    # a pure translation by (3, −2) read back exactly
    T = homography_from_points(src, src + torch.tensor([3.0, -2.0]))
    assert torch.allclose(T, torch.tensor([[1, 0, 3], [0, 1, -2], [0, 0, 1]], dtype=torch.float64), atol=1e-12)


def test_warp_perspective_integer_translation_is_a_shift():
    img = torch.rand(3, 6, 7, generator=torch.Generator().manual_seed(0))
    T = torch.tensor([[1, 0, 2], [0, 1, 1], [0, 0, 1]], dtype=torch.float64)  # move content right 2, down 1
    out = warp_perspective(img, T)
    assert torch.allclose(out[:, 1:, 2:], img[:, :-1, :-2], atol=1e-6)
    # uncovered pixels are zero (up to the rounding of the normalised sampling grid)
    assert float(out[:, 0].abs().max()) < 1e-12 and float(out[:, :, :2].abs().max()) < 1e-12


def test_synthetic_pairs_are_exact_on_an_affine_image():
    # Bilinear interpolation reproduces an affine image exactly, so target(p) must equal the affine function
    # evaluated at H⁻¹ p wherever H⁻¹ p lies inside the source.
    h, w = 24, 32
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    image = torch.stack([xs / w, ys / h, 0.5 * xs / w + 0.25 * ys / h]).float()
    gen = torch.Generator().manual_seed(0)
    pairs = synthetic_homography_pairs(image, 3, generator=gen, max_shift=0.1, grid_step=8)
    again = synthetic_homography_pairs(image, 3, generator=torch.Generator().manual_seed(0), max_shift=0.1, grid_step=8)
    assert all(torch.equal(a["homography"], b["homography"]) for a, b in zip(pairs, again))  # reproducible
    for pair in pairs:
        H = pair["homography"]
        assert not torch.allclose(H, torch.eye(3, dtype=torch.float64))
        pixels = torch.stack([xs.flatten(), ys.flatten()], dim=1)
        back = project_points(torch.linalg.inv(H), pixels)
        inside = (back[:, 0] >= 0) & (back[:, 0] <= w - 1) & (back[:, 1] >= 0) & (back[:, 1] <= h - 1)
        want = torch.stack([back[:, 0] / w, back[:, 1] / h, 0.5 * back[:, 0] / w + 0.25 * back[:, 1] / h])
        got = pair["target"].reshape(3, -1).double()
        assert torch.allclose(got[:, inside], want[:, inside], atol=1e-6)
        # keypoints: the source grid and its projection
        assert torch.equal(pair["source_points"], keypoint_grid(h, w, 8))
        assert torch.allclose(pair["target_points"].double(), project_points(H, pair["source_points"]), atol=1e-5)
        assert pair["valid"].any()
