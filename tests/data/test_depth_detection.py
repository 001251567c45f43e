"""NYUv2 depth, VOC detection XML and COCO20K readers on tiny fixtures."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from wrcup.data import Coco20kDataset, DatasetLayoutError, NYUv2DepthDataset, VOCDetectionDataset, parse_voc_xml


def test_nyuv2_png_millimetres_and_npy_metres(tmp_path, fx):
    depth_mm = np.full((8, 8), 1500, dtype=np.uint16)
    depth_mm[0, 0] = 0  # missing
    depth_mm[1, 1] = 65535
    fx.write_rgb(tmp_path / "test" / "rgb" / "0001.png")
    (tmp_path / "test" / "depth").mkdir(parents=True)
    Image.fromarray(depth_mm).save(tmp_path / "test" / "depth" / "0001.png")
    fx.write_rgb(tmp_path / "test" / "rgb" / "0002.png")
    metres = np.full((8, 8), 2.25, dtype=np.float32)
    metres[3, 3] = np.nan
    np.save(tmp_path / "test" / "depth" / "0002.npy", metres)
    ds = NYUv2DepthDataset(tmp_path, "test")
    assert len(ds) == 2
    a, b = ds[0], ds[1]
    # 1500 mm → 1.5 m, 65535 mm → 65.535 m, 0 → 0 and invalid
    assert a["depth"].dtype == torch.float32 and float(a["depth"][2, 2]) == pytest.approx(1.5)
    assert float(a["depth"][1, 1]) == pytest.approx(65.535)
    assert not a["valid"][0, 0] and int(a["valid"].sum()) == 63
    assert float(b["depth"][0, 0]) == pytest.approx(2.25) and not b["valid"][3, 3] and int(b["valid"].sum()) == 63
    (tmp_path / "test" / "depth" / "0002.npy").unlink()
    with pytest.raises(DatasetLayoutError, match="0002"):
        NYUv2DepthDataset(tmp_path, "test")
    with pytest.raises(DatasetLayoutError, match="train/rgb"):
        NYUv2DepthDataset(tmp_path, "train")


VOC_XML = """<annotation>
  <filename>{name}.jpg</filename>
  <size><width>8</width><height>8</height><depth>3</depth></size>
  <object><name>dog</name><truncated>0</truncated><difficult>0</difficult>
    <bndbox><xmin>1</xmin><ymin>2</ymin><xmax>8</xmax><ymax>6</ymax></bndbox></object>
  <object><name>cat</name><truncated>1</truncated><difficult>0</difficult>
    <bndbox><xmin>3</xmin><ymin>3</ymin><xmax>4</xmax><ymax>5</ymax></bndbox></object>
  <object><name>person</name><truncated>0</truncated><difficult>1</difficult>
    <bndbox><xmin>2</xmin><ymin>1</ymin><xmax>2</xmax><ymax>1</ymax></bndbox></object>
</annotation>"""


def make_voc(root, fx, hard_only_image=True):
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    fx.write_rgb(root / "JPEGImages" / "000005.jpg")
    (root / "Annotations" / "000005.xml").write_text(VOC_XML.format(name="000005"))
    ids = ["000005"]
    if hard_only_image:
        fx.write_rgb(root / "JPEGImages" / "000007.jpg")
        only_hard = VOC_XML.format(name="000007").replace("<name>dog</name><truncated>0", "<name>dog</name><truncated>1")
        (root / "Annotations" / "000007.xml").write_text(only_hard)
        ids.append("000007")
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(ids) + "\n")


def test_voc_detection_boxes_and_hard_objects(tmp_path, fx):
    make_voc(tmp_path / "VOCdevkit" / "VOC2007", fx)
    # VOC's 1-based inclusive pixel indices → pixel edges: xmin − 1, ymin − 1, xmax, ymax.
    # dog (1, 2, 8, 6) → [0, 1, 8, 6] spans the full 8-pixel width; the 1-pixel person (2,1,2,1) → [1, 0, 2, 1].
    ds = VOCDetectionDataset(tmp_path / "VOCdevkit", year="2007")
    item = ds[0]
    assert item["labels"] == ["dog", "cat", "person"]
    assert item["boxes"].tolist() == [[0, 1, 8, 6], [2, 2, 4, 5], [1, 0, 2, 1]]
    assert item["truncated"].tolist() == [False, True, False] and item["difficult"].tolist() == [False, False, True]
    assert item["image"].shape == (3, 8, 8)
    # LOST/TokenCut's no-hard setting: drop truncated/difficult objects, then images left without a box
    easy = VOCDetectionDataset(tmp_path / "VOCdevkit" / "VOC2007", remove_hard=True, drop_empty=True, load_images=False)
    assert easy.ids == ["000005"] and easy[0]["labels"] == ["dog"] and "image" not in easy[0]
    assert len(VOCDetectionDataset(tmp_path / "VOCdevkit", remove_hard=True, load_images=False)) == 2
    assert parse_voc_xml(tmp_path / "VOCdevkit" / "VOC2007" / "Annotations" / "000005.xml")["size"] == (8, 8)
    with pytest.raises(DatasetLayoutError, match="Main/test.txt"):
        VOCDetectionDataset(tmp_path / "VOCdevkit", split="test")


def test_coco20k_boxes(tmp_path, fx):
    fx.write_rgb(tmp_path / "train2014" / "COCO_train2014_000000000009.jpg")
    fx.write_rgb(tmp_path / "train2014" / "COCO_train2014_000000000025.jpg")
    coco = {
        "images": [
            {"id": 9, "file_name": "COCO_train2014_000000000009.jpg", "height": 8, "width": 8},
            {"id": 25, "file_name": "COCO_train2014_000000000025.jpg", "height": 8, "width": 8},
        ],
        "annotations": [
            # [x, y, w, h] = [1.4, 2.6, 3.2, 4.0] → [x, y, x + w, y + h] = [1.4, 2.6, 4.6, 6.6] → rounded [1, 3, 5, 7]
            {"id": 1, "image_id": 9, "bbox": [1.4, 2.6, 3.2, 4.0], "category_id": 18, "iscrowd": 0},
            {"id": 2, "image_id": 9, "bbox": [0, 0, 8, 8], "category_id": 1, "iscrowd": 1},
            {"id": 3, "image_id": 25, "bbox": [0, 0, 2, 2], "category_id": 3, "iscrowd": 0},
        ],
        "categories": [],
    }
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    (tmp_path / "list.txt").write_text("train2014/COCO_train2014_000000000009.jpg\ntrain2014/COCO_train2014_000000000025.jpg\n")
    ds = Coco20kDataset(tmp_path, tmp_path / "ann.json", tmp_path / "list.txt")
    assert len(ds) == 2
    first = ds[0]
    assert first["boxes"].tolist() == [[1.0, 3.0, 5.0, 7.0]] and first["category_ids"] == [18]  # crowd removed
    assert first["image"].shape == (3, 8, 8) and first["image_id"] == 9
    # image_root may also be the image folder itself: the list's file names are then looked up by base name
    with_crowd = Coco20kDataset(tmp_path / "train2014", tmp_path / "ann.json", tmp_path / "list.txt", remove_crowd=False)
    assert with_crowd[0]["boxes"].shape == (2, 4)
    (tmp_path / "list.txt").write_text("COCO_train2014_000000000099.jpg\n")
    with pytest.raises(ValueError, match="000000000099"):
        Coco20kDataset(tmp_path, tmp_path / "ann.json", tmp_path / "list.txt")
