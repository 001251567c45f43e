"""Monocular depth by a linear probe on NYUv2-layout data."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ...data.registry import get_dataset
from ..extract import FeatureExtractor, file_key, resize_to_grid
from ..metrics import abs_rel, delta1, rmse
from ..probe import predict_depth, train_depth_probe
from . import register_task
from ._common import FeatureTargetSet, TaskOptions, check_size, option, seed_all, snap_to_patch, subsample, train_view

_NYU = get_dataset("depth", "nyuv2")


@dataclass
class DepthProbeOptions(TaskOptions):
    root: str = option(help="NYUv2-layout root (<root>/<split>/rgb, <root>/<split>/depth)")
    size: int = option(448, help="input size (training: size×size centre crops; evaluation: shorter side)")
    epochs: int = option(20, help="probe training epochs")
    lr: float = option(5e-4, help="probe learning rate")
    batch_size: int = option(4, help="probe batch size")
    max_images: int = option(None, help="at most this many images per split (spread evenly)")
    train_split: str = option(_NYU.splits[0], help="split to train on")
    val_split: str = option(_NYU.splits[1], help="split to evaluate on")
    seed: int = option(0, help="seed of the probe's initialisation and batch order")


@register_task("depth-probe", DepthProbeOptions, help="monocular depth by a linear probe on NYUv2-layout data "
               "(RMSE, δ1)", metric="rmse", higher_is_better=False, label="depth RMSE")
def run(extractor: FeatureExtractor, options: DepthProbeOptions, progress: bool = True) -> dict:
    """Monocular depth by a linear probe on NYUv2-layout data (:class:`wrcup.data.NYUv2DepthDataset`).

    Views as in the seg-probe task (training: central square at ``size``, depth resized by nearest neighbour so
    missing values stay missing; evaluation: whole image, shorter side ``size``, prediction at the depth map's
    resolution). The probe is :func:`wrcup.eval.probe.train_depth_probe` (scale-invariant log loss + spatial
    gradient matching). Metrics per image over valid pixels (finite, > 0), then averaged over images: RMSE
    (metres), abs rel, δ1 (percent of pixels with max(pred/gt, gt/pred) < 1.25). No median scaling.
    """
    o = options
    size = check_size(o.size)
    patch = extractor.backbone.patch_size
    size = snap_to_patch(size, patch)
    seed_all(o.seed)
    train_data = _NYU.open(o.root, split=o.train_split)
    val_data = _NYU.open(o.root, split=o.val_split)
    train_idx = subsample(list(range(len(train_data))), o.max_images)
    val_idx = subsample(list(range(len(val_data))), o.max_images)
    method = extractor.method
    items = FeatureTargetSet(torch.float32)
    for i in tqdm(train_idx, desc=f"depth-probe/{method} features", disable=not progress, unit="img"):
        sample = train_data[i]
        depth = torch.where(sample["valid"], sample["depth"], torch.zeros_like(sample["depth"]))
        image, depth = train_view(sample["image"], depth, size, torch.float32)
        items.add(extractor(image[None], keys=[file_key(sample["image_path"]) + f"|square{size}"])[0], depth)
    probe, history = train_depth_probe(items, epochs=o.epochs, lr=o.lr, batch_size=o.batch_size, seed=o.seed,
                                       progress=progress, device=extractor.device, return_history=True)
    del items
    per_image = []
    for i in tqdm(val_idx, desc=f"depth-probe/{method} eval", disable=not progress, unit="img"):
        sample = val_data[i]
        if not bool(sample["valid"].any()):
            continue
        feats = extractor(resize_to_grid(sample["image"], size, patch)[None], keys=[file_key(sample["image_path"])])
        pred = predict_depth(probe, feats, tuple(sample["depth"].shape))[0].cpu()
        per_image.append((rmse(pred, sample["depth"], sample["valid"]), abs_rel(pred, sample["depth"], sample["valid"]),
                          delta1(pred, sample["depth"], sample["valid"])))
    if not per_image:
        raise ValueError(f"NYUv2 root {str(o.root)!r}: no evaluation image has valid depth")
    n = len(per_image)
    return {"rmse": sum(r[0] for r in per_image) / n, "abs_rel": sum(r[1] for r in per_image) / n,
            "delta1": 100 * sum(r[2] for r in per_image) / n, "num_train_images": len(train_idx),
            "num_val_images": n, "train_loss": history,
            "settings": {"size": size, "epochs": o.epochs, "lr": o.lr, "batch_size": o.batch_size,
                         "max_images": o.max_images, "train_split": o.train_split, "val_split": o.val_split,
                         "seed": o.seed}}
