"""Semi-supervised video object segmentation by label propagation (DINO protocol) on DAVIS."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ...data.davis import DavisDataset
from ..extract import FeatureExtractor, file_key, resize_to_grid
from ..metrics import davis_scores
from ..propagation import propagate_labels
from . import register_task
from ._common import TaskOptions, option


@dataclass
class DavisOptions(TaskOptions):
    root: str = option(help="DAVIS-layout root")
    year: str = option("2016", help="DAVIS year", choices=DavisDataset.YEARS)
    split: str = option("val", help="image set (ImageSets/<year>/<split>.txt)")
    size: int = option(448, help="frame shorter side")
    sequences: list = option(None, help="sequences to evaluate (default: all of the split)")
    n_last: int = option(7, help="previous predicted frames kept as context, besides the first frame")
    topk: int = option(5, help="neighbours kept per target cell over all context frames")
    radius: int = option(12, help="neighbourhood radius in backbone patches (2·radius cells on a 2× grid)")
    temperature: float = option(0.1, help="affinity exp(cos / temperature)")


@register_task("davis", DavisOptions, help="video object segmentation by label propagation (J&F)",
               metric="J&F-Mean", higher_is_better=True, label="DAVIS J&F")
def run(extractor: FeatureExtractor, options: DavisOptions, progress: bool = True) -> dict:
    """Semi-supervised VOS by label propagation (DINO protocol) on a DAVIS-layout root.

    Frames are resized so that the shorter side is ``size`` (multiples of the patch); predictions are made at
    the original frame size. ``radius`` is in backbone patches: on a 2× grid the window spans 2·radius cells,
    so every method sees the same spatial neighbourhood.
    """
    o = options
    data = DavisDataset(o.root, year=o.year, split=o.split, sequences=o.sequences)
    patch = extractor.backbone.patch_size
    preds, gts = {}, {}
    t0 = time.perf_counter()
    for seq in tqdm(data.sequences, desc=f"davis/{extractor.method}", disable=not progress, unit="seq"):
        frames = data.frames(seq)
        gt = data.load_masks(seq)

        def features():
            for path in frames:
                image = resize_to_grid(data.load_frame(path), o.size, patch)
                yield extractor(image[None], keys=[file_key(path)])[0].float().cpu()

        preds[seq] = torch.stack(list(propagate_labels(
            features(), gt[0], tuple(gt.shape[-2:]), n_last=o.n_last, topk=o.topk, radius=o.radius * extractor.scale,
            temperature=o.temperature, progress=False)))
        gts[seq] = gt
    scores = davis_scores(preds, gts)
    scores["seconds"] = round(time.perf_counter() - t0, 1)
    scores["settings"] = {"size": o.size, "n_last": o.n_last, "topk": o.topk, "radius_patches": o.radius,
                          "temperature": o.temperature, "year": o.year, "split": o.split}
    return scores
