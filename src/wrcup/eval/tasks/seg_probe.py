"""Semantic segmentation by a linear probe on the method's features."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ...data.davis import DavisDataset, davis_fg_split  # noqa: F401  (davis_fg_split: re-exported by the package)
from ...data.registry import get_dataset, list_datasets
from ..extract import FeatureExtractor, file_key, resize_to_grid
from ..metrics import ConfusionMatrix
from ..probe import predict_segmentation, train_linear_probe
from . import register_task
from ._common import FeatureTargetSet, TaskOptions, check_size, option, seed_all, snap_to_patch, subsample, train_view


@dataclass
class SegProbeOptions(TaskOptions):
    dataset: str = option(help="segmentation reader", choices=lambda: list_datasets("segmentation"))
    root: str = option(help="dataset root in the reader's standard layout")
    size: int = option(448, help="input size (training: size×size centre crops; evaluation: shorter side)")
    epochs: int = option(20, help="probe training epochs")
    lr: float = option(5e-4, help="probe learning rate")
    batch_size: int = option(4, help="probe batch size")
    max_images: int = option(None, help="at most this many images per split (spread evenly)")
    train_split: str = option(None, help="reader split to train on (default: the dataset's train)")
    val_split: str = option(None, help="reader split to evaluate on (default: the dataset's val)")
    train_sequences: list = option(None, help="davis-fg: training sequences")
    test_sequences: list = option(None, help="davis-fg: test sequences")
    frame_step: int = option(5, help="davis-fg: every k-th annotated frame")
    davis_year: str = option("2016", help="davis-fg: DAVIS year", choices=DavisDataset.YEARS)
    davis_split: str = option("val", help="davis-fg: DAVIS image set")
    seed: int = option(0, help="seed of the probe's initialisation and batch order")


class _Indexed:
    """Uniform ``load(i) → (image path, image, label)`` over chosen items of a segmentation reader."""

    def __init__(self, reader, indices: list[int]):
        self.reader, self.indices = reader, indices
        self.num_classes, self.class_names = reader.num_classes, reader.class_names

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, index: int):
        sample = self.reader[self.indices[index]]
        return sample["image_path"], sample["image"], sample["label"]


@register_task("seg-probe", SegProbeOptions, help="semantic segmentation by a linear probe (mIoU, pixel accuracy)",
               metric="mIoU", higher_is_better=True, label="seg mIoU")
def run(extractor: FeatureExtractor, options: SegProbeOptions, progress: bool = True) -> dict:
    """Semantic segmentation by a linear probe (1×1 conv) on the method's features.

    Training views: the central square of each training image, resized to ``size``×``size``; labels cropped the
    same way and resized to ``size``×``size`` by nearest neighbour (the loss is taken there, logits upsampled
    bilinearly). Evaluation: every evaluation image whole, shorter side ``size`` (sides multiples of the patch),
    prediction upsampled to the label's own resolution; 255 ignored. Training features are held in RAM as
    float16 (at 448 and a 2× grid: 64·64·384·2 B = 3 MB per image).

    ``dataset``: a segmentation reader of :mod:`wrcup.data.registry` (reader splits default to its training and
    evaluation splits), e.g. ``davis-fg`` (foreground/background on DAVIS frames: every ``frame_step``-th
    annotated frame; training and test sequences disjoint, see :func:`wrcup.data.davis.davis_fg_split`).
    ``max_images`` keeps at most that many images of each split, spread evenly (deterministic).

    Returns ``{"mIoU", "pixel_accuracy", "mean_class_accuracy" (percent), "per_class_iou" {class: percent or
    None}, "num_train_images", "num_val_images", "train_loss" (per epoch), "settings"}``.
    """
    o = options
    entry = get_dataset("segmentation", o.dataset)
    size = check_size(o.size)
    patch = extractor.backbone.patch_size
    size = snap_to_patch(size, patch)
    seed_all(o.seed)
    settings = {"dataset": o.dataset, "size": size, "epochs": o.epochs, "lr": o.lr, "batch_size": o.batch_size,
                "max_images": o.max_images, "seed": o.seed}
    reader_options = {name: getattr(o, name) for name in entry.options}
    train_split, val_split = o.train_split or entry.splits[0], o.val_split or entry.splits[1]
    train_reader = entry.open(o.root, split=train_split, **reader_options)
    val_reader = entry.open(o.root, split=val_split, **reader_options)
    train_set = _Indexed(train_reader, subsample(list(range(len(train_reader))), o.max_images))
    val_set = _Indexed(val_reader, subsample(list(range(len(val_reader))), o.max_images))
    # readers that choose their own items (davis-fg: by sequence) record that choice instead of the splits
    settings.update(getattr(train_reader, "settings", None) or {"train_split": train_split, "val_split": val_split})
    num_classes, class_names = train_set.num_classes, train_set.class_names
    method = extractor.method

    items = FeatureTargetSet(torch.int64)
    for i in tqdm(range(len(train_set)), desc=f"seg-probe/{method} features", disable=not progress, unit="img"):
        path, image, label = train_set.load(i)
        image, label = train_view(image, label, size, torch.int64)
        feats = extractor(image[None], keys=[file_key(path) + f"|square{size}"])[0]
        items.add(feats, label)
    probe, history = train_linear_probe(items, num_classes=num_classes, epochs=o.epochs, lr=o.lr,
                                        batch_size=o.batch_size, seed=o.seed, progress=progress,
                                        device=extractor.device, return_history=True)
    del items
    confusion = ConfusionMatrix(num_classes, ignore_index=255)
    for i in tqdm(range(len(val_set)), desc=f"seg-probe/{method} eval", disable=not progress, unit="img"):
        path, image, label = val_set.load(i)
        feats = extractor(resize_to_grid(image, size, patch)[None], keys=[file_key(path)])
        confusion.update(predict_segmentation(probe, feats, tuple(label.shape))[0].cpu(), label)
    scores = confusion.compute()
    names = class_names or tuple(str(k) for k in range(num_classes))
    per_class = {n: (None if v != v else 100 * v) for n, v in zip(names, scores["per_class_iou"])}
    return {"mIoU": 100 * scores["mIoU"], "pixel_accuracy": 100 * scores["pixel_accuracy"],
            "mean_class_accuracy": 100 * scores["mean_class_accuracy"], "per_class_iou": per_class,
            "num_classes": num_classes, "num_train_images": len(train_set), "num_val_images": len(val_set),
            "train_loss": history, "settings": settings}
