"""DavisDataset on tiny 2016 / 2017 fixtures and on the real davis2016-dev data."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from wrcup.data import DatasetLayoutError, DavisDataset, davis_first_frame_boxes, mask_box, parse_davis_list


def make_davis(root, year: str, sequences: dict[str, list[np.ndarray]], fx, list_form: str = "names"):
    """Write a DAVIS layout: frames as JPEG, masks as 0/255 PNG (2016) or palette PNG (2017)."""
    lines = []
    for seq, masks in sequences.items():
        for t, mask in enumerate(masks):
            fx.write_rgb(root / "JPEGImages" / "480p" / seq / f"{t:05d}.jpg", seed=t)
            stored = (mask > 0).astype(np.uint8) * 255 if year == "2016" else mask
            fx.write_index(root / "Annotations" / "480p" / seq / f"{t:05d}.png", stored, palette=year == "2017")
            lines.append(f"/JPEGImages/480p/{seq}/{t:05d}.jpg /Annotations/480p/{seq}/{t:05d}.png")
    (root / "ImageSets" / year).mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines) if list_form == "pairs" else "\n".join(sequences)
    (root / "ImageSets" / year / "val.txt").write_text(text + "\n")


def square_mask(top, left, size=3, value=1):
    m = np.zeros((8, 8), dtype=np.uint8)
    m[top : top + size, left : left + size] = value
    return m


@pytest.mark.parametrize("list_form", ["names", "pairs"])
def test_davis2016_fixture(tmp_path, fx, list_form):
    seqs = {"bear": [square_mask(1, 1), square_mask(2, 2), square_mask(3, 3)], "cat": [square_mask(0, 4)] * 2}
    make_davis(tmp_path, "2016", seqs, fx, list_form)
    ds = DavisDataset(tmp_path, year="2016")
    assert ds.sequences == ["bear", "cat"] and len(ds) == 2
    assert [p.name for p in ds.frames("bear")] == ["00000.jpg", "00001.jpg", "00002.jpg"]
    mask = ds.load_mask(ds.masks("bear")[1])
    # 0/255 stored → 0/1 object map
    assert mask.dtype == torch.int64 and torch.equal(mask, torch.from_numpy(square_mask(2, 2).astype(np.int64)))
    item = ds[1]
    assert item["name"] == "cat" and item["num_objects"] == 1 and len(item["frames"]) == 2
    assert ds.load_masks("bear").shape == (3, 8, 8)
    frame = ds.load_frame(ds.frames("bear")[0])
    assert frame.shape == (3, 8, 8) and frame.dtype == torch.float32


def test_davis2017_palette_masks_and_first_frame_boxes(tmp_path, fx):
    first = np.zeros((8, 8), dtype=np.uint8)
    first[1:3, 1:4] = 1  # object 1: rows 1..2, cols 1..3 → box [1, 1, 4, 3]
    first[5:8, 6:8] = 2  # object 2: rows 5..7, cols 6..7 → box [6, 5, 8, 8] (touches the image edge)
    first[0, 7] = 255  # void pixel: read as background
    make_davis(tmp_path, "2017", {"dogs": [first, first]}, fx)
    ds = DavisDataset(tmp_path, year="2017")
    mask = ds.load_mask(ds.masks("dogs")[0])
    assert set(mask.unique().tolist()) == {0, 1, 2} and int(mask[0, 7]) == 0
    assert ds[0]["num_objects"] == 2
    boxes = davis_first_frame_boxes(ds)
    assert boxes[0]["object_ids"] == [1, 2] and boxes[0]["image_path"].name == "00000.jpg"
    assert boxes[0]["boxes"].tolist() == [[1.0, 1.0, 4.0, 3.0], [6.0, 5.0, 8.0, 8.0]]


def test_mask_box():
    m = torch.zeros(5, 6, dtype=torch.bool)
    assert mask_box(m) is None
    m[2, 3] = True  # single pixel (row 2, col 3) → [3, 2, 4, 3]
    assert mask_box(m).tolist() == [3.0, 2.0, 4.0, 3.0]


def test_davis_layout_errors_name_root_and_missing_part(tmp_path, fx):
    with pytest.raises(DatasetLayoutError, match="ImageSets/2016/val.txt"):
        DavisDataset(tmp_path)
    make_davis(tmp_path, "2016", {"bear": [square_mask(1, 1)] * 2}, fx)
    with pytest.raises(DatasetLayoutError, match="ImageSets/2017/val.txt"):
        DavisDataset(tmp_path, year="2017")
    (tmp_path / "ImageSets" / "2016" / "val.txt").write_text("bear\nghost\n")
    with pytest.raises(DatasetLayoutError, match="ghost") as err:
        DavisDataset(tmp_path)
    assert str(tmp_path) in str(err.value)
    with pytest.raises(ValueError, match="year"):
        DavisDataset(tmp_path, year="2018")


def test_parse_davis_list_both_forms(tmp_path):
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("/JPEGImages/480p/a/00000.jpg /Annotations/480p/a/00000.png\n"
                     "/JPEGImages/480p/a/00001.jpg /Annotations/480p/a/00001.png\n"
                     "/JPEGImages/480p/b/00000.jpg /Annotations/480p/b/00000.png\n")
    assert parse_davis_list(pairs) == ["a", "b"]
    names = tmp_path / "names.txt"
    names.write_text("b\n\na\n")
    assert parse_davis_list(names) == ["b", "a"]


def test_davis2016_real_data(fx):
    root = fx.shared_data / "davis2016-dev"
    if not root.is_dir():
        pytest.skip(f"real DAVIS data not found at {root}")
    ds = DavisDataset(root, year="2016", split="val")
    # the dev set's README: ten sequences (the first five were the set until 2026-11-29), 659 frames
    assert ds.sequences == ["blackswan", "car-shadow", "dog", "kite-surf", "motocross-jump",
                            "bmx-trees", "breakdance", "cows", "drift-chicane", "soapbox"]
    frame_counts = {s: len(ds.frames(s)) for s in ds.sequences}
    assert frame_counts == {"blackswan": 50, "car-shadow": 40, "dog": 60, "kite-surf": 50, "motocross-jump": 40,
                            "bmx-trees": 80, "breakdance": 84, "cows": 104, "drift-chicane": 52, "soapbox": 99}
    assert sum(frame_counts.values()) == 659
    assert all(len(ds.frames(s)) == len(ds.masks(s)) for s in ds.sequences)
    item = ds[0]
    assert item["first_mask"].shape == (480, 854) and set(item["first_mask"].unique().tolist()) == {0, 1}
    assert item["num_objects"] == 1
    frame = ds.load_frame(item["frames"][0])
    assert frame.shape == (3, 480, 854) and 0.0 <= float(frame.min()) and float(frame.max()) <= 1.0
    boxes = davis_first_frame_boxes(ds)
    assert [b["name"] for b in boxes] == ds.sequences
    for b in boxes:
        (x0, y0, x1, y1), = b["boxes"].tolist()
        assert 0 <= x0 < x1 <= 854 and 0 <= y0 < y1 <= 480
    # the box is tight: the mask touches all four sides of it
    m = item["first_mask"].bool()
    x0, y0, x1, y1 = (int(v) for v in boxes[0]["boxes"][0])
    assert m[y0, x0:x1].any() and m[y1 - 1, x0:x1].any() and m[y0:y1, x0].any() and m[y0:y1, x1 - 1].any()
    assert not m[:y0].any() and not m[y1:].any() and not m[:, :x0].any() and not m[:, x1:].any()
