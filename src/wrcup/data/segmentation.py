"""Semantic segmentation readers: CamVid (SegNet layout), PASCAL VOC 2012, ADE20K, Cityscapes, COCO-Stuff 164k.

Every reader yields ``{"image": float32 3×H×W in [0, 1], "label": int64 H×W (train ids 0..C−1, ignore 255),
"name": str, "image_path": Path, "label_path": Path}``, optionally passed through ``transform(sample) -> sample``.
Raw label values are mapped to train ids through a 256-entry lookup table (``label_lut``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import torch

from .._checks import check_choice
from .registry import register_dataset
from .images import IMAGE_EXTENSIONS, DatasetLayoutError, check_same_size, load_image, load_label

IGNORE_INDEX = 255


def _identity_lut(num_classes: int) -> torch.Tensor:
    lut = torch.full((256,), IGNORE_INDEX, dtype=torch.int64)
    lut[:num_classes] = torch.arange(num_classes)
    return lut


class SegmentationDataset(torch.utils.data.Dataset):
    """Base class: a list of (image, label) file pairs and a raw-value → train-id lookup table."""

    name = "segmentation"
    num_classes: int = 0
    class_names: tuple[str, ...] | None = None
    ignore_index = IGNORE_INDEX

    def __init__(self, samples: Sequence[tuple[Path, Path]], label_lut: torch.Tensor, transform: Callable | None):
        self.samples = [(Path(i), Path(l)) for i, l in samples]
        self.label_lut = label_lut
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def map_label(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw stored label values (int64 H×W, 0..255) → train ids (0..C−1, 255 ignore)."""
        if raw.numel() and (int(raw.min()) < 0 or int(raw.max()) > 255):
            raise ValueError(f"{self.name}: label values must lie in 0..255, got {int(raw.min())}..{int(raw.max())}")
        return self.label_lut[raw]

    def load_label(self, path: str | os.PathLike) -> torch.Tensor:
        return self.map_label(load_label(path))

    def __getitem__(self, index: int) -> dict:
        image_path, label_path = self.samples[index]
        image = load_image(image_path)
        label = self.load_label(label_path)
        check_same_size(self.name, image, image_path, label, label_path, "label")
        sample = {
            "image": image,
            "label": label,
            "name": image_path.stem,
            "image_path": image_path,
            "label_path": label_path,
        }
        return self.transform(sample) if self.transform is not None else sample


def _require_dir(dataset: str, root: Path, folder: Path, expected: str) -> Path:
    if not root.is_dir():
        raise DatasetLayoutError(dataset, root, root, expected)
    if not folder.is_dir():
        raise DatasetLayoutError(dataset, root, folder, expected)
    return folder


def _require_file(dataset: str, root: Path, path: Path, expected: str) -> Path:
    if not path.is_file():
        raise DatasetLayoutError(dataset, root, path, expected)
    return path


def _find_with_stem(folder: Path, stem: str, extensions=IMAGE_EXTENSIONS) -> Path | None:
    for ext in extensions:
        for candidate in (folder / f"{stem}{ext}", folder / f"{stem}{ext.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def _split_alias(split: str, aliases: dict[str, str]) -> str:
    return aliases.get(split, split)


# ------------------------------------------------------------------------------------------------- CamVid
CAMVID_CLASSES = (
    "sky", "building", "pole", "road", "pavement", "tree", "sign", "fence", "car", "pedestrian", "bicyclist",
)


class CamVidDataset(SegmentationDataset):
    """CamVid in the SegNet layout, 11 classes; label 11 (void) → 255.

    Layout::

        <root>/{train,val,test}/<name>.png|jpg
        <root>/{train,val,test}annot/<name>.png       # class id per pixel: 0..10, 11 = void
        <root>/{train,val,test}.txt                   # one sample a line: "<name>" (or a file name), or the
                                                      # SegNet form "/SegNet/CamVid/train/x.png
                                                      #             /SegNet/CamVid/trainannot/x.png"

    Without a list file, every image in ``<split>/`` that has an annotation is used.
    """

    name = "CamVid"
    num_classes = 11
    class_names = CAMVID_CLASSES
    LAYOUT = "<root>/<split>/*.png|jpg, <root>/<split>annot/*.png, optional <root>/<split>.txt"

    def __init__(self, root: str | os.PathLike, split: str = "train", transform: Callable | None = None):
        root = Path(root)
        self.root, self.split = root, split
        image_dir = _require_dir(self.name, root, root / split, self.LAYOUT)
        label_dir = _require_dir(self.name, root, root / f"{split}annot", self.LAYOUT)
        list_file = root / f"{split}.txt"
        if list_file.is_file():
            stems = [Path(line.split()[0]).stem for line in _read_lines(list_file)]
        else:
            stems = sorted(p.stem for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        samples = []
        for stem in stems:
            image = _find_with_stem(image_dir, stem)
            if image is None:
                raise DatasetLayoutError(self.name, root, f"{split}/{stem}.(png|jpg)", self.LAYOUT)
            label = _require_file(self.name, root, label_dir / f"{stem}.png", self.LAYOUT)
            samples.append((image, label))
        if not samples:
            raise ValueError(f"CamVid root {str(root)!r}: split {split!r} has no samples")
        super().__init__(samples, _identity_lut(self.num_classes), transform)


# ------------------------------------------------------------------------------------------- PASCAL VOC
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


def _voc_year_root(root: Path, year: str) -> Path:
    """Accept either the VOC<year> folder itself or a VOCdevkit folder containing it."""
    nested = root / f"VOC{year}"
    return nested if nested.is_dir() and not (root / "JPEGImages").is_dir() else root


class VOCSegmentationDataset(SegmentationDataset):
    """PASCAL VOC 2012 semantic segmentation, 21 classes (0 background), 255 = boundary/ignore.

    Layout (``root`` = VOC2012 folder, or the VOCdevkit folder that contains it)::

        <root>/JPEGImages/<id>.jpg
        <root>/SegmentationClass/<id>.png              # palette PNG; the palette index is the class
        <root>/ImageSets/Segmentation/{train,val,trainval}.txt
    """

    name = "VOC2012"
    num_classes = 21
    class_names = VOC_CLASSES
    LAYOUT = "<root>/JPEGImages/<id>.jpg, <root>/SegmentationClass/<id>.png, <root>/ImageSets/Segmentation/<split>.txt"

    def __init__(self, root: str | os.PathLike, split: str = "val", transform: Callable | None = None):
        root = _voc_year_root(Path(root), "2012")
        self.root, self.split = root, split
        image_dir = _require_dir(self.name, root, root / "JPEGImages", self.LAYOUT)
        label_dir = _require_dir(self.name, root, root / "SegmentationClass", self.LAYOUT)
        list_file = _require_file(self.name, root, root / "ImageSets" / "Segmentation" / f"{split}.txt", self.LAYOUT)
        samples = []
        for stem in _read_lines(list_file):
            image = _require_file(self.name, root, image_dir / f"{stem}.jpg", self.LAYOUT)
            label = _require_file(self.name, root, label_dir / f"{stem}.png", self.LAYOUT)
            samples.append((image, label))
        super().__init__(samples, _identity_lut(self.num_classes), transform)


# ------------------------------------------------------------------------------------------------ ADE20K
class ADE20KDataset(SegmentationDataset):
    """ADE20K scene parsing (ADEChallengeData2016), 150 classes: stored 0 ("other") → 255, k → k − 1.

    Layout::

        <root>/images/{training,validation}/<name>.jpg
        <root>/annotations/{training,validation}/<name>.png

    ``split`` accepts ``training``/``validation`` or ``train``/``val``.
    """

    name = "ADE20K"
    num_classes = 150
    LAYOUT = "<root>/images/<training|validation>/*.jpg, <root>/annotations/<training|validation>/*.png"

    def __init__(self, root: str | os.PathLike, split: str = "validation", transform: Callable | None = None):
        root = Path(root)
        split = _split_alias(split, {"train": "training", "val": "validation"})
        check_choice(split, "split", ("training", "validation"))
        self.root, self.split = root, split
        image_dir = _require_dir(self.name, root, root / "images" / split, self.LAYOUT)
        label_dir = _require_dir(self.name, root, root / "annotations" / split, self.LAYOUT)
        images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        samples = [(img, _require_file(self.name, root, label_dir / f"{img.stem}.png", self.LAYOUT)) for img in images]
        if not samples:
            raise DatasetLayoutError(self.name, root, image_dir.relative_to(root) / "*.jpg", self.LAYOUT)
        lut = torch.full((256,), IGNORE_INDEX, dtype=torch.int64)
        lut[1 : self.num_classes + 1] = torch.arange(self.num_classes)  # "reduce zero label"
        super().__init__(samples, lut, transform)


# -------------------------------------------------------------------------------------------- Cityscapes
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)
# The standard Cityscapes labelId → trainId table (cityscapesScripts' labels.py); every other id is ignored.
CITYSCAPES_ID_TO_TRAINID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}


class CityscapesDataset(SegmentationDataset):
    """Cityscapes fine annotations, 19 train ids (label ids mapped by ``CITYSCAPES_ID_TO_TRAINID``, others 255).

    Layout::

        <root>/leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png
        <root>/gtFine/<split>/<city>/<stem>_gtFine_labelIds.png
    """

    name = "Cityscapes"
    num_classes = 19
    class_names = CITYSCAPES_CLASSES
    LAYOUT = "<root>/leftImg8bit/<split>/<city>/*_leftImg8bit.png, <root>/gtFine/<split>/<city>/*_gtFine_labelIds.png"

    def __init__(self, root: str | os.PathLike, split: str = "val", transform: Callable | None = None):
        root = Path(root)
        self.root, self.split = root, split
        image_dir = _require_dir(self.name, root, root / "leftImg8bit" / split, self.LAYOUT)
        label_dir = _require_dir(self.name, root, root / "gtFine" / split, self.LAYOUT)
        images = sorted(image_dir.glob("*/*_leftImg8bit.png"), key=lambda p: p.relative_to(image_dir).as_posix())
        if not images:
            raise DatasetLayoutError(self.name, root, image_dir.relative_to(root) / "<city>/*_leftImg8bit.png", self.LAYOUT)
        samples = []
        for img in images:
            stem = img.name[: -len("_leftImg8bit.png")]
            label = label_dir / img.parent.name / f"{stem}_gtFine_labelIds.png"
            samples.append((img, _require_file(self.name, root, label, self.LAYOUT)))
        lut = torch.full((256,), IGNORE_INDEX, dtype=torch.int64)
        for label_id, train_id in CITYSCAPES_ID_TO_TRAINID.items():
            lut[label_id] = train_id
        super().__init__(samples, lut, transform)


# ------------------------------------------------------------------------------------------- COCO-Stuff
# In the 0-based stuffthingmaps PNGs, ids 0..181 name COCO's 91 thing slots and 91 stuff classes (255 unlabeled).
# Eleven thing slots are never used (COCO defines 80 of its 91 thing ids); dropping them leaves 171 classes.
COCO_STUFF_UNUSED_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
COCO_STUFF_USED_IDS = tuple(i for i in range(182) if i not in COCO_STUFF_UNUSED_IDS)


class CocoStuffDataset(SegmentationDataset):
    """COCO-Stuff 164k, 171 classes: used raw ids (0-based, with gaps) → contiguous 0..170, all else 255.

    Layout::

        <root>/images/{train2017,val2017}/<id>.jpg
        <root>/annotations/{train2017,val2017}/<id>.png   # raw stuffthingmaps (0-based ids, 255 unlabeled)

    ``remap=False`` reads labels as stored, for annotations already converted to 0..170 (then pass
    ``label_suffix="_labelTrainIds.png"`` for mmsegmentation's converted files). The 27-class coarse
    variant is not provided.
    """

    name = "COCO-Stuff"
    num_classes = 171
    LAYOUT = "<root>/images/<train2017|val2017>/*.jpg, <root>/annotations/<train2017|val2017>/*.png"

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "val2017",
        transform: Callable | None = None,
        remap: bool = True,
        label_suffix: str = ".png",
    ):
        root = Path(root)
        split = _split_alias(split, {"train": "train2017", "val": "val2017"})
        self.root, self.split = root, split
        image_dir = _require_dir(self.name, root, root / "images" / split, self.LAYOUT)
        label_dir = _require_dir(self.name, root, root / "annotations" / split, self.LAYOUT)
        images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not images:
            raise DatasetLayoutError(self.name, root, image_dir.relative_to(root) / "*.jpg", self.LAYOUT)
        samples = [
            (img, _require_file(self.name, root, label_dir / f"{img.stem}{label_suffix}", self.LAYOUT)) for img in images
        ]
        if remap:
            lut = torch.full((256,), IGNORE_INDEX, dtype=torch.int64)
            lut[list(COCO_STUFF_USED_IDS)] = torch.arange(len(COCO_STUFF_USED_IDS))
        else:
            lut = _identity_lut(self.num_classes)
        super().__init__(samples, lut, transform)


__all__ = [
    "SegmentationDataset",
    "CamVidDataset",
    "VOCSegmentationDataset",
    "ADE20KDataset",
    "CityscapesDataset",
    "CocoStuffDataset",
    "CAMVID_CLASSES",
    "VOC_CLASSES",
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_ID_TO_TRAINID",
    "COCO_STUFF_USED_IDS",
    "IGNORE_INDEX",
]


# ------------------------------------------------------------------------------------------- registration
# (training split, evaluation split) of each reader: what a linear probe trains on and is scored on
register_dataset("segmentation", "camvid", CamVidDataset, splits=("train", "val"), help="CamVid (SegNet layout)")
register_dataset("segmentation", "voc", VOCSegmentationDataset, splits=("train", "val"), help="PASCAL VOC 2012")
register_dataset("segmentation", "ade20k", ADE20KDataset, splits=("training", "validation"), help="ADE20K")
register_dataset("segmentation", "cityscapes", CityscapesDataset, splits=("train", "val"), help="Cityscapes")
register_dataset("segmentation", "cocostuff", CocoStuffDataset, splits=("train2017", "val2017"), help="COCO-Stuff")
