"""Task runners: a model + a method + a dataset → a JSON-ready result dict.

Each runner is deterministic (fixed seeds, no random augmentation), shows progress, and can cache the
backbone features on disk (``cache_dir``), which every method shares.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .extract import FeatureExtractor, file_key, resize_to_grid


def fidelity(extractor: FeatureExtractor, image_paths: list, size: int = 224, progress: bool = True) -> dict:
    """Feature fidelity: features of an image at ``size`` (shorter side) against the backbone's own features of
    the same image at 2×``size`` (the target grid is twice the input grid).

    ``none`` is compared after nearest (replicating) upsampling to the target grid, ``bilinear`` and ``learned``
    directly. Returns mean cosine and normalised MSE over images (each image weighs the same).
    """
    from ..data.images import load_image
    from .fidelity import feature_fidelity

    patch = extractor.backbone.patch_size
    per_image = []
    for path in tqdm(image_paths, desc=f"fidelity/{extractor.method}", disable=not progress, unit="img"):
        image = load_image(path)
        low_in = resize_to_grid(image, size, patch)
        # exactly twice the input grid (rounding each size separately could give 57 vs 2×28 cells)
        high_in = F.interpolate(image[None], size=tuple(2 * d for d in low_in.shape[-2:]), mode="bilinear",
                                antialias=True, align_corners=False)[0].clamp(0, 1)
        key = file_key(path)
        pred = extractor(low_in[None], keys=[key])
        target = extractor.low_res(high_in[None], keys=[key])
        if extractor.method == "none":
            pred = F.interpolate(pred, size=target.shape[-2:], mode="nearest")
        per_image.append({k: float(v) for k, v in feature_fidelity(pred.float(), target.float()).items()})
    keys = per_image[0].keys() if per_image else ()
    return {"num_images": len(per_image), "input_size": size, "target_size": 2 * size,
            **{k: sum(r[k] for r in per_image) / len(per_image) for k in keys}}


def davis(extractor: FeatureExtractor, root: str | Path, year: str = "2016", split: str = "val", size: int = 448,
          sequences: list[str] | None = None, n_last: int = 7, topk: int = 5, radius: int = 12,
          temperature: float = 0.1, progress: bool = True) -> dict:
    """Semi-supervised VOS by label propagation (DINO protocol) on a DAVIS-layout root.

    Frames are resized so that the shorter side is ``size`` (multiples of the patch); predictions are made at
    the original frame size. ``radius`` is in backbone patches: on a 2× grid the window spans 2·radius cells,
    so every method sees the same spatial neighbourhood.
    """
    from ..data.davis import DavisDataset
    from .metrics import davis_scores
    from .propagation import propagate_labels

    data = DavisDataset(root, year=year, split=split, sequences=sequences)
    patch = extractor.backbone.patch_size
    preds, gts = {}, {}
    t0 = time.perf_counter()
    for seq in tqdm(data.sequences, desc=f"davis/{extractor.method}", disable=not progress, unit="seq"):
        frames = data.frames(seq)
        gt = data.load_masks(seq)

        def features():
            for path in frames:
                image = resize_to_grid(data.load_frame(path), size, patch)
                yield extractor(image[None], keys=[file_key(path)])[0].float().cpu()

        preds[seq] = torch.stack(list(propagate_labels(
            features(), gt[0], tuple(gt.shape[-2:]), n_last=n_last, topk=topk, radius=radius * extractor.scale,
            temperature=temperature, progress=False)))
        gts[seq] = gt
    scores = davis_scores(preds, gts)
    scores["seconds"] = round(time.perf_counter() - t0, 1)
    scores["settings"] = {"size": size, "n_last": n_last, "topk": topk, "radius_patches": radius,
                          "temperature": temperature, "year": year, "split": split}
    return scores
