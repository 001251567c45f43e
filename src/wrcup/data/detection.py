"""Box annotations for unsupervised object discovery (CorLoc): PASCAL VOC07/VOC12 and COCO20K.

Boxes are float32 K×4 ``[x0, y0, x1, y1]`` in pixel-edge coordinates (x right, y down; a box covering the
whole W×H image is [0, 0, W, H]), the convention of LOST/TokenCut's evaluation.
"""
from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable

import torch

from .registry import register_dataset
from .images import DatasetLayoutError, ImageReadError, load_image

_VOC_LAYOUT = "<root>/Annotations/<id>.xml, <root>/JPEGImages/<id>.jpg, <root>/ImageSets/Main/<split>.txt"


def parse_voc_xml(path: str | os.PathLike, remove_hard: bool = False) -> dict:
    """Objects of one VOC annotation file.

    VOC stores 1-based inclusive pixel indices; as in LOST/TokenCut, xmin and ymin are shifted by −1 so that
    the box is expressed in pixel-edge coordinates (xmax and ymax are kept). With ``remove_hard`` objects marked
    ``difficult`` or ``truncated`` are dropped (LOST/TokenCut's ``--no_hard`` option).

    Returns:
        ``{"boxes": float32 K×4, "labels": list[str], "difficult": bool K, "truncated": bool K,
        "size": (H, W) or None}``
    """
    path = Path(path)
    try:
        tree = ET.parse(path)
    except (OSError, ET.ParseError) as err:
        raise ImageReadError(f"cannot parse VOC annotation {str(path)!r}: {err}") from err
    root = tree.getroot()
    boxes, labels, difficult, truncated = [], [], [], []
    for obj in root.iter("object"):
        is_difficult = (obj.findtext("difficult") or "0").strip() == "1"
        is_truncated = (obj.findtext("truncated") or "0").strip() == "1"
        if remove_hard and (is_difficult or is_truncated):
            continue
        bnd = obj.find("bndbox")
        if bnd is None:
            raise ImageReadError(f"VOC annotation {str(path)!r}: an object has no <bndbox>")
        try:
            xmin, ymin, xmax, ymax = (float(bnd.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError) as err:
            raise ImageReadError(f"VOC annotation {str(path)!r}: bad <bndbox>: {err}") from err
        boxes.append([int(xmin) - 1, int(ymin) - 1, int(xmax), int(ymax)])
        labels.append((obj.findtext("name") or "").strip())
        difficult.append(is_difficult)
        truncated.append(is_truncated)
    size = root.find("size")
    hw = None
    if size is not None and size.findtext("height") and size.findtext("width"):
        hw = (int(size.findtext("height")), int(size.findtext("width")))
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": labels,
        "difficult": torch.tensor(difficult, dtype=torch.bool),
        "truncated": torch.tensor(truncated, dtype=torch.bool),
        "size": hw,
    }


class VOCDetectionDataset(torch.utils.data.Dataset):
    """PASCAL VOC 2007 / 2012 object boxes, for object discovery.

    Layout (``root`` = VOC<year> folder, or the VOCdevkit folder that contains it)::

        <root>/Annotations/<id>.xml
        <root>/JPEGImages/<id>.jpg
        <root>/ImageSets/Main/<split>.txt        # LOST/TokenCut evaluate on "trainval"

    ``remove_hard=True`` drops difficult/truncated objects (see :func:`parse_voc_xml`); ``drop_empty=True``
    then also drops images left with no box, as LOST/TokenCut do in that setting (this parses every XML here).

    Items: ``{"image": float32 3×H×W (only if ``load_images``), "boxes": float32 K×4, "labels": list[str],
    "difficult", "truncated", "name", "image_path", "annotation_path"}``.
    """

    name = "VOC"

    def __init__(
        self,
        root: str | os.PathLike,
        year: str = "2007",
        split: str = "trainval",
        remove_hard: bool = False,
        drop_empty: bool = False,
        load_images: bool = True,
        transform: Callable | None = None,
    ):
        root = Path(root)
        nested = root / f"VOC{year}"
        if nested.is_dir() and not (root / "JPEGImages").is_dir():
            root = nested
        self.root, self.year, self.split = root, str(year), split
        self.remove_hard, self.load_images, self.transform = remove_hard, load_images, transform
        for sub in ("Annotations", "JPEGImages"):
            if not (root / sub).is_dir():
                raise DatasetLayoutError(f"VOC{year}", root, sub if root.is_dir() else root, _VOC_LAYOUT)
        list_file = root / "ImageSets" / "Main" / f"{split}.txt"
        if not list_file.is_file():
            raise DatasetLayoutError(f"VOC{year}", root, list_file.relative_to(root), _VOC_LAYOUT)
        ids = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
        for image_id in ids:
            xml = root / "Annotations" / f"{image_id}.xml"
            if not xml.is_file():
                raise DatasetLayoutError(f"VOC{year}", root, xml.relative_to(root), _VOC_LAYOUT)
        if drop_empty:
            ids = [i for i in ids if len(parse_voc_xml(root / "Annotations" / f"{i}.xml", remove_hard)["labels"])]
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        image_id = self.ids[index]
        annotation_path = self.root / "Annotations" / f"{image_id}.xml"
        sample = parse_voc_xml(annotation_path, self.remove_hard)
        sample.update(
            name=image_id,
            image_path=self.root / "JPEGImages" / f"{image_id}.jpg",
            annotation_path=annotation_path,
        )
        if self.load_images:
            sample["image"] = load_image(sample["image_path"])
        return self.transform(sample) if self.transform is not None else sample


class Coco20kDataset(torch.utils.data.Dataset):
    """COCO20K: 19,817 COCO train2014 images with their instance boxes (the LOST/TokenCut benchmark).

    Inputs::

        image_root/          # folder with the images (e.g. COCO's train2014/) or its parent
        annotation_file      # a COCO instances JSON covering those images (instances_train2014.json or
                             # LOST's instances_train2014_sel20k.json)
        image_list           # text file, one image a line, e.g. "train2014/COCO_train2014_000000000009.jpg"

    Images are matched to the JSON by file name. COCO [x, y, w, h] boxes become [x, y, x + w, y + h], rounded
    to integers and with crowd annotations removed (``remove_crowd``), as in LOST/TokenCut's evaluation.

    Items: ``{"image" (if ``load_images``), "boxes": float32 K×4, "category_ids": list[int], "name",
    "image_path", "image_id"}``.
    """

    name = "COCO20K"

    def __init__(
        self,
        image_root: str | os.PathLike,
        annotation_file: str | os.PathLike,
        image_list: str | os.PathLike,
        remove_crowd: bool = True,
        load_images: bool = True,
        transform: Callable | None = None,
    ):
        self.image_root = Path(image_root)
        self.remove_crowd, self.load_images, self.transform = remove_crowd, load_images, transform
        layout = "image_root/<file name>, a COCO instances JSON, an image-list text file"
        for path in (self.image_root,):
            if not path.is_dir():
                raise DatasetLayoutError(self.name, path, path, layout)
        for path in (Path(annotation_file), Path(image_list)):
            if not path.is_file():
                raise DatasetLayoutError(self.name, self.image_root, path, layout)
        with open(annotation_file) as f:
            coco = json.load(f)
        if not isinstance(coco, dict) or "images" not in coco or "annotations" not in coco:
            raise ValueError(f"{annotation_file}: not a COCO instances file (needs 'images' and 'annotations')")
        by_name = {Path(im["file_name"]).name: im for im in coco["images"]}
        anns_by_image: dict[int, list[dict]] = {}
        for ann in coco["annotations"]:
            anns_by_image.setdefault(ann["image_id"], []).append(ann)
        self.entries: list[tuple[Path, dict, list[dict]]] = []
        for line in Path(image_list).read_text().splitlines():
            entry = line.strip()
            if not entry:
                continue
            info = by_name.get(Path(entry).name)
            if info is None:
                raise ValueError(f"COCO20K: image {entry!r} from {image_list} is not in {annotation_file}")
            candidates = [self.image_root / entry, self.image_root / Path(entry).name]
            image_path = next((c for c in candidates if c.is_file()), None)
            if image_path is None:
                raise DatasetLayoutError(self.name, self.image_root, entry, layout)
            self.entries.append((image_path, info, anns_by_image.get(info["id"], [])))

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict:
        image_path, info, anns = self.entries[index]
        boxes, cats = [], []
        for ann in anns:
            if self.remove_crowd and ann.get("iscrowd", 0) == 1:
                continue
            x, y, w, h = ann["bbox"]
            boxes.append([round(x), round(y), round(x + w), round(y + h)])
            cats.append(int(ann["category_id"]))
        sample = {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "category_ids": cats,
            "name": image_path.stem,
            "image_path": image_path,
            "image_id": info["id"],
        }
        if self.load_images:
            sample["image"] = load_image(image_path)
        return self.transform(sample) if self.transform is not None else sample


__all__ = ["VOCDetectionDataset", "Coco20kDataset", "parse_voc_xml"]


# ------------------------------------------------------------------------------------------- registration
def _voc_boxes(year: str):
    def items(root, split: str = "trainval") -> list[dict]:
        data = VOCDetectionDataset(root, year=year, split=split, load_images=False)
        return [{"image_path": s["image_path"], "boxes": s["boxes"], "name": Path(s["image_path"]).stem}
                for s in (data[i] for i in range(len(data)))]
    return items


def _coco20k_boxes(root, coco_annotations=None, coco_image_list=None) -> list[dict]:
    if coco_annotations is None or coco_image_list is None:
        raise ValueError("coco20k needs coco_annotations (instances JSON) and coco_image_list (text file)")
    data = Coco20kDataset(root, coco_annotations, coco_image_list, load_images=False)
    return [{"image_path": s["image_path"], "boxes": s["boxes"], "name": Path(s["image_path"]).stem}
            for s in (data[i] for i in range(len(data)))]


# TokenCut's cosine thresholds: 0.2 on VOC, 0.3 on COCO20K
register_dataset("discovery", "voc07", _voc_boxes("2007"), options=("split",), help="VOC2007 boxes",
                 tau=0.2, loader=load_image)
register_dataset("discovery", "voc12", _voc_boxes("2012"), options=("split",), help="VOC2012 boxes",
                 tau=0.2, loader=load_image)
register_dataset("discovery", "coco20k", _coco20k_boxes, options=("coco_annotations", "coco_image_list"),
                 help="COCO20K", tau=0.3, loader=load_image)
