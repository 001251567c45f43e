"""Segmentation readers on tiny fixtures in their standard layouts (and CamVid on the real data)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from wrcup.data import (
    CITYSCAPES_ID_TO_TRAINID,
    COCO_STUFF_USED_IDS,
    ADE20KDataset,
    CamVidDataset,
    CityscapesDataset,
    CocoStuffDataset,
    DatasetLayoutError,
    VOCSegmentationDataset,
)

LABELS = np.array(  # 8×8 raw labels used by every fixture; each reader maps them its own way
    [[0, 1, 2, 3, 4, 5, 6, 7],
     [8, 9, 10, 11, 12, 13, 14, 15],
     [7, 8, 11, 12, 13, 17, 19, 20],
     [21, 22, 23, 24, 25, 26, 27, 28],
     [31, 32, 33, 34, 90, 91, 181, 182],
     [11, 25, 28, 29, 44, 65, 67, 68],
     [70, 82, 150, 151, 255, 255, 0, 0],
     [1, 1, 1, 1, 2, 2, 2, 2]], dtype=np.uint8)


def expected(mapping) -> torch.Tensor:
    return torch.tensor([[mapping(int(v)) for v in row] for row in LABELS], dtype=torch.int64)


def test_camvid_fixture(tmp_path, fx):
    labels = np.minimum(LABELS, 11)  # CamVid stores 0..11
    for split, names in {"train": ["a", "b"], "val": ["c"]}.items():
        for i, name in enumerate(names):
            fx.write_rgb(tmp_path / split / f"{name}.png", seed=i)
            fx.write_index(tmp_path / f"{split}annot" / f"{name}.png", labels)
    # list files in both accepted forms: bare names, and SegNet's "image annotation" path pairs
    (tmp_path / "train.txt").write_text("b\na\n")
    (tmp_path / "val.txt").write_text("/SegNet/CamVid/val/c.png /SegNet/CamVid/valannot/c.png\n")
    train = CamVidDataset(tmp_path, "train")
    assert len(train) == 2 and train[0]["name"] == "b"  # list order is kept
    item = train[1]
    assert item["image"].shape == (3, 8, 8) and item["label"].dtype == torch.int64
    # 0..10 kept, 11 (void) → 255
    assert torch.equal(item["label"], expected(lambda v: 255 if min(v, 11) == 11 else min(v, 11)))
    assert len(CamVidDataset(tmp_path, "val")) == 1
    assert train.num_classes == 11 and len(train.class_names) == 11
    with pytest.raises(DatasetLayoutError, match="testannot"):
        (tmp_path / "test").mkdir()
        CamVidDataset(tmp_path, "test")


def test_camvid_real_data(fx):
    root = fx.shared_data / "camvid"
    if not root.is_dir():
        pytest.skip(f"real CamVid data not found at {root}")
    train, val = CamVidDataset(root, "train"), CamVidDataset(root, "val")
    assert (len(train), len(val)) == (367, 101)
    item = val[0]
    assert item["image"].shape == (3, 360, 480) and item["label"].shape == (360, 480)
    values = set(item["label"].unique().tolist())
    assert values <= set(range(11)) | {255} and len(values - {255}) >= 5


def test_voc_segmentation_fixture(tmp_path, fx):
    root = tmp_path / "VOCdevkit" / "VOC2012"
    labels = np.where(LABELS <= 20, LABELS, 255).astype(np.uint8)
    for i, stem in enumerate(["2007_000032", "2007_000039"]):
        fx.write_rgb(root / "JPEGImages" / f"{stem}.jpg", seed=i)
        fx.write_index(root / "SegmentationClass" / f"{stem}.png", labels, palette=True)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000039\n")
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000032\n2007_000039\n")
    ds = VOCSegmentationDataset(tmp_path / "VOCdevkit", "val")  # the VOCdevkit folder is accepted too
    assert len(ds) == 1 and ds[0]["name"] == "2007_000039"
    assert torch.equal(ds[0]["label"], expected(lambda v: v if v <= 20 else 255))
    assert len(VOCSegmentationDataset(root, "train")) == 2 and ds.num_classes == 21
    with pytest.raises(DatasetLayoutError, match="Segmentation/test.txt"):
        VOCSegmentationDataset(root, "test")


def test_ade20k_fixture(tmp_path, fx):
    fx.write_rgb(tmp_path / "images" / "validation" / "ADE_val_00000001.jpg")
    fx.write_index(tmp_path / "annotations" / "validation" / "ADE_val_00000001.png", LABELS)
    ds = ADE20KDataset(tmp_path, "val")
    # 0 ("other") → 255; k in 1..150 → k − 1; beyond 150 → 255
    assert torch.equal(ds[0]["label"], expected(lambda v: v - 1 if 1 <= v <= 150 else 255))
    with pytest.raises(DatasetLayoutError, match="images/training"):
        ADE20KDataset(tmp_path, "train")


def test_cityscapes_fixture(tmp_path, fx):
    stem = "frankfurt_000000_000294"
    fx.write_rgb(tmp_path / "leftImg8bit" / "val" / "frankfurt" / f"{stem}_leftImg8bit.png")
    fx.write_index(tmp_path / "gtFine" / "val" / "frankfurt" / f"{stem}_gtFine_labelIds.png", LABELS)
    ds = CityscapesDataset(tmp_path, "val")
    assert len(ds) == 1 and ds[0]["name"] == f"{stem}_leftImg8bit"
    # the standard table, spelled out for the ids in the fixture: 7 road, 8 sidewalk, 11 building, 12 wall,
    # 13 fence, 17 pole, 19 light, 20 sign, 21 vegetation, 22 terrain, 23 sky, 24 person, 25 rider, 26 car,
    # 27 truck, 28 bus, 31 train, 32 motorcycle, 33 bicycle; everything else (0–6, 9, 10, 14, 15, 34, …) → 255
    table = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
             26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
    assert CITYSCAPES_ID_TO_TRAINID == table
    assert torch.equal(ds[0]["label"], expected(lambda v: table.get(v, 255)))
    (tmp_path / "gtFine" / "val" / "frankfurt" / f"{stem}_gtFine_labelIds.png").unlink()
    with pytest.raises(DatasetLayoutError, match="gtFine_labelIds"):
        CityscapesDataset(tmp_path, "val")


def test_coco_stuff_fixture(tmp_path, fx):
    fx.write_rgb(tmp_path / "images" / "val2017" / "000000000139.jpg")
    fx.write_index(tmp_path / "annotations" / "val2017" / "000000000139.png", LABELS)
    ds = CocoStuffDataset(tmp_path, "val")
    # The 11 unused thing slots (0-based 11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90) are removed and the rest
    # renumbered in order: 0..10 → 0..10, 12 → 11, 24 → 23, 26 → 24, 27 → 25, 30 → 26, 91 → 80, 181 → 170;
    # 182..254 and 255 → 255.
    assert len(COCO_STUFF_USED_IDS) == 171
    hand = {0: 0, 10: 10, 12: 11, 24: 23, 26: 24, 27: 25, 31: 27, 91: 80, 181: 170}
    label = ds[0]["label"]
    for raw, train_id in hand.items():
        positions = np.argwhere(LABELS == raw)
        assert all(int(label[r, c]) == train_id for r, c in positions), raw
    for raw in (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90, 182, 255):
        positions = np.argwhere(LABELS == raw)
        assert all(int(label[r, c]) == 255 for r, c in positions), raw
    raw_ds = CocoStuffDataset(tmp_path, "val", remap=False)
    # stored values are kept up to 170; 181 and 182 lie beyond the 171 classes → 255
    assert int(raw_ds[0]["label"][4, 5]) == 91 and int(raw_ds[0]["label"][4, 6]) == 255
