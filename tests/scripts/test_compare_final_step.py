"""scripts/compare_final_step.py: a crop of two --to-image files in one shared PCA; a box that does not fit."""
from __future__ import annotations

import numpy as np
from PIL import Image

from script_helpers import load_script


def _inputs(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(tmp_path / "photo.png")
    paths = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        np.save(tmp_path / name / "photo.npy", rng.standard_normal((6, 30, 40)).astype(np.float16))
        paths.append(str(tmp_path / name / "photo.npy"))
    return str(tmp_path / "photo.png"), paths


def test_pca_colours_both_crops_with_one_projection():
    script = load_script("compare_final_step")
    crop = np.random.default_rng(1).standard_normal((5, 8, 9)).astype(np.float32)
    same, twice = script.pca_rgb([crop, crop])
    assert same.shape == (8, 9, 3) and 0 <= same.min() and same.max() <= 1
    np.testing.assert_array_equal(same, twice)   # one projection and one colour range for all crops


def test_writes_the_figure_and_refuses_a_box_outside(tmp_path, capsys):
    script = load_script("compare_final_step")
    photo, files = _inputs(tmp_path)
    out = tmp_path / "crop.png"
    assert script.main([photo, *files, "--box", "5", "4", "20", "--out", str(out)]) == 0
    assert Image.open(out).size[0] > Image.open(out).size[1]
    assert script.main([photo, *files, "--box", "30", "0", "20", "--out", str(out)]) == 2
    assert "does not fit in the features' 40×30" in capsys.readouterr().err
