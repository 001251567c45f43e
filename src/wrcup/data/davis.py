"""DAVIS 2016 / 2017 video object segmentation (semi-supervised) reader."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .._checks import check_choice
from .registry import register_dataset
from .images import DatasetLayoutError, ImageReadError, load_image, load_label

_LAYOUT = (
    "<root>/ImageSets/<year>/<split>.txt, <root>/JPEGImages/<resolution>/<sequence>/*.jpg, "
    "<root>/Annotations/<resolution>/<sequence>/*.png"
)


class DavisDataset(torch.utils.data.Dataset):
    """DAVIS sequences in the standard layout; one item per sequence.

    Layout::

        <root>/ImageSets/<year>/<split>.txt           # sequence names, one a line (2017, and 2016 as
                                                       # distributed with the 2017 toolkit) or
                                                       # "/JPEGImages/480p/<seq>/00000.jpg /Annotations/..." pairs
                                                       # (the original DAVIS 2016 release); both are accepted
        <root>/JPEGImages/<resolution>/<seq>/*.jpg
        <root>/Annotations/<resolution>/<seq>/*.png    # 2016: 0/255 binary; 2017: palette PNG, index = object id

    Masks are returned as object-id maps: 2016 masks become 0/1 (any non-zero value is the object); 2017 masks
    keep their palette index, except 255 (void) which is mapped to 0 as the DAVIS 2017 toolkit does when it
    reads ground truth. The number of objects of a sequence is the largest id in its first mask.

    Items: ``{"name": str, "frames": list[Path], "masks": list[Path], "first_mask": int64 H×W,
    "num_objects": int}``; frames are decoded on demand with :meth:`load_frame`.
    """

    YEARS = ("2016", "2017")

    def __init__(
        self,
        root: str | os.PathLike,
        year: str = "2016",
        split: str = "val",
        resolution: str = "480p",
        sequences: list[str] | None = None,
    ):
        self.root = Path(root)
        self.year = check_choice(str(year), "year", self.YEARS)
        self.split = split
        self.resolution = resolution
        if not self.root.is_dir():
            raise DatasetLayoutError("DAVIS", self.root, self.root, _LAYOUT)
        list_file = self.root / "ImageSets" / self.year / f"{split}.txt"
        if sequences is None:
            if not list_file.is_file():
                raise DatasetLayoutError("DAVIS", self.root, list_file, _LAYOUT)
            sequences = parse_davis_list(list_file)
        self.sequences: list[str] = list(sequences)
        if not self.sequences:
            raise ValueError(f"DAVIS root {str(self.root)!r}: {list_file} lists no sequences")
        self.frame_root = self.root / "JPEGImages" / resolution
        self.mask_root = self.root / "Annotations" / resolution
        for folder in (self.frame_root, self.mask_root):
            if not folder.is_dir():
                raise DatasetLayoutError("DAVIS", self.root, folder, _LAYOUT)
        self._frames: dict[str, list[Path]] = {}
        self._masks: dict[str, list[Path]] = {}
        for seq in self.sequences:
            frames = sorted((self.frame_root / seq).glob("*.jpg"))
            masks = sorted((self.mask_root / seq).glob("*.png"))
            if not frames:
                raise DatasetLayoutError("DAVIS", self.root, self.frame_root / seq / "*.jpg", _LAYOUT)
            if not masks:
                raise DatasetLayoutError("DAVIS", self.root, self.mask_root / seq / "*.png", _LAYOUT)
            frame_stems = {p.stem for p in frames}
            stray = [p.name for p in masks if p.stem not in frame_stems]
            if stray:
                raise ValueError(f"DAVIS root {str(self.root)!r}, sequence {seq!r}: masks without frames: {stray[:5]}")
            self._frames[seq] = frames
            self._masks[seq] = masks

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, index: int) -> dict:
        seq = self.sequences[index]
        first = self.load_mask(self._masks[seq][0])
        return {
            "name": seq,
            "frames": list(self._frames[seq]),
            "masks": list(self._masks[seq]),
            "first_mask": first,
            "num_objects": int(first.max()),
        }

    def _check_sequence(self, seq: str) -> None:
        if seq not in self._frames:
            raise KeyError(f"sequence {seq!r} is not in this DAVIS split ({len(self.sequences)} sequences)")

    def frames(self, seq: str) -> list[Path]:
        """Frame files of ``seq``, sorted by name (= temporal order)."""
        self._check_sequence(seq)
        return list(self._frames[seq])

    def masks(self, seq: str) -> list[Path]:
        """Annotation files of ``seq``, sorted by name; the i-th belongs to the frame with the same stem."""
        self._check_sequence(seq)
        return list(self._masks[seq])

    @staticmethod
    def load_frame(path: str | os.PathLike) -> torch.Tensor:
        """float32 3×H×W in [0, 1]."""
        return load_image(path)

    def load_mask(self, path: str | os.PathLike) -> torch.Tensor:
        """Object-id map (int64 H×W): 0 background, 1..K objects (see the class docstring)."""
        label = load_label(path)
        if self.year == "2016":
            return (label > 0).long()
        return torch.where(label == 255, torch.zeros_like(label), label)

    def load_masks(self, seq: str) -> torch.Tensor:
        """All annotations of ``seq`` stacked: int64 T×H×W."""
        return torch.stack([self.load_mask(p) for p in self.masks(seq)])


def parse_davis_list(path: str | os.PathLike) -> list[str]:
    """Sequence names from a DAVIS ImageSets file, in order of first appearance.

    Accepts one sequence name per line, or lines of ``<frame path> <annotation path>`` pairs (the sequence is
    the frame's parent folder).
    """
    names: list[str] = []
    seen: set[str] = set()
    for raw in Path(path).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        first = line.split()[0]
        name = Path(first).parent.name if "/" in first else first
        if not name:
            raise ValueError(f"{path}: cannot read a sequence name from line {raw!r}")
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def mask_box(mask: torch.Tensor) -> torch.Tensor | None:
    """Tight box around the non-zero pixels of an H×W mask: float32 [x0, y0, x1, y1] in pixel-edge coordinates
    (a single pixel (r, c) gives [c, r, c + 1, r + 1]); None for an empty mask."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be H×W, got shape {tuple(mask.shape)}")
    rows = torch.nonzero(mask.bool().any(dim=1)).flatten()
    cols = torch.nonzero(mask.bool().any(dim=0)).flatten()
    if rows.numel() == 0:
        return None
    return torch.tensor(
        [cols[0].item(), rows[0].item(), cols[-1].item() + 1, rows[-1].item() + 1], dtype=torch.float32
    )


def davis_first_frame_boxes(dataset: DavisDataset) -> list[dict]:
    """Ground-truth boxes for object discovery (CorLoc) on DAVIS: one box per object of each first frame.

    Returns, per sequence (dataset order): ``{"name", "image_path": Path (first frame), "boxes": float32 K×4
    [x0, y0, x1, y1] (pixel-edge coordinates, see :func:`mask_box`), "object_ids": list[int]}``. Objects absent
    from the first frame get no box; a sequence whose first mask is empty has a 0×4 ``boxes``.
    """
    if not isinstance(dataset, DavisDataset):
        raise TypeError(f"dataset must be a DavisDataset, got {type(dataset).__name__}")
    out = []
    for seq in dataset.sequences:
        first = dataset.load_mask(dataset.masks(seq)[0])
        boxes, ids = [], []
        for obj in range(1, int(first.max()) + 1):
            box = mask_box(first == obj)
            if box is not None:
                boxes.append(box)
                ids.append(obj)
        stacked = torch.stack(boxes) if boxes else torch.zeros(0, 4, dtype=torch.float32)
        first_frame = next((f for f in dataset.frames(seq) if f.stem == dataset.masks(seq)[0].stem), None)
        if first_frame is None:
            raise ImageReadError(f"DAVIS sequence {seq!r}: no frame for mask {dataset.masks(seq)[0]}")
        out.append({"name": seq, "image_path": first_frame, "boxes": stacked, "object_ids": ids})
    return out


def davis_fg_split(sequences: list[str], train_sequences=None, test_sequences=None, n_train: int = 3):
    """Disjoint train / test sequence lists for the DAVIS foreground probe.

    Defaults: the sorted sequence list split into its first ``n_train`` (train) and the rest (test).
    Raises ValueError when a named sequence is unknown, a list is empty, or the two lists overlap.
    """
    ordered = sorted(sequences)
    train = list(train_sequences) if train_sequences else ordered[:n_train]
    test = list(test_sequences) if test_sequences else [s for s in ordered if s not in train]
    for name, chosen in (("train_sequences", train), ("test_sequences", test)):
        unknown = [s for s in chosen if s not in ordered]
        if unknown:
            raise ValueError(f"{name}: unknown DAVIS sequences {unknown} (have {ordered})")
        if not chosen:
            raise ValueError(f"{name} is empty: DAVIS root has only {len(ordered)} sequences")
    overlap = sorted(set(train) & set(test))
    if overlap:
        raise ValueError(f"train_sequences and test_sequences must be disjoint, both contain {overlap}")
    return train, test


class DavisForeground:
    """Foreground/background segmentation on DAVIS frames: the frames of the ``split`` side ("train" or "test")
    of :func:`davis_fg_split`, every ``frame_step``-th annotated frame, labels 0 background, 1 any object (2017
    void 255 is background, as in the DAVIS toolkit). Items as the segmentation readers':
    ``{"image_path", "image", "label"}``; ``settings`` records the sequences used."""

    num_classes = 2
    class_names = ("background", "foreground")

    def __init__(self, root, split: str = "train", train_sequences=None, test_sequences=None, frame_step: int = 5,
                 davis_year: str = "2016", davis_split: str = "val"):
        check_choice(split, "split", ("train", "test"))
        self.davis = DavisDataset(root, year=davis_year, split=davis_split)
        train, test = davis_fg_split(self.davis.sequences, train_sequences, test_sequences)
        self.settings = {"train_sequences": train, "test_sequences": test, "frame_step": frame_step,
                         "davis_year": davis_year, "davis_split": davis_split}
        self.samples = []
        for seq in train if split == "train" else test:
            frames = {p.stem: p for p in self.davis.frames(seq)}
            for mask in self.davis.masks(seq)[::frame_step]:
                if mask.stem in frames:
                    self.samples.append((frames[mask.stem], mask))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        frame, mask = self.samples[index]
        return {"image_path": frame, "image": self.davis.load_frame(frame),
                "label": (self.davis.load_mask(mask) > 0).long()}


def _first_frame_boxes(root, davis_year: str = "2016", davis_split: str = "val") -> list[dict]:
    data = DavisDataset(root, year=davis_year, split=davis_split)
    return [{"image_path": e["image_path"], "boxes": e["boxes"], "name": e["name"]}
            for e in davis_first_frame_boxes(data)]


register_dataset("segmentation", "davis-fg", DavisForeground, splits=("train", "test"),
                 options=("train_sequences", "test_sequences", "frame_step", "davis_year", "davis_split"),
                 help="DAVIS foreground/background, training and test sequences disjoint")
# the box around each object of each sequence's first-frame mask; DAVIS follows VOC's TokenCut threshold
register_dataset("discovery", "davis-first-frames", _first_frame_boxes, options=("davis_year", "davis_split"),
                 help="DAVIS first frames", tau=0.2, loader=DavisDataset.load_frame)


__all__ = ["DavisDataset", "DavisForeground", "davis_fg_split", "davis_first_frame_boxes", "mask_box",
           "parse_davis_list"]
