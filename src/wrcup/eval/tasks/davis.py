"""Semi-supervised video object segmentation by label propagation (DINO protocol) on DAVIS."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..._cache import cache_key, read_entry, write_entry
from ...data.davis import DavisDataset
from ..extract import FeatureExtractor, file_key, resize_to_grid
from ..metrics import davis_sequence_scores, davis_summary
from ..propagation import propagate_labels
from . import register_task
from ._common import TaskOptions, option

# Part of every sequence entry's key: bump it when the propagation or the metric changes what a sequence scores,
# so that entries of the old code are not read back.
SEQUENCE_ENTRY_VERSION = "davis-sequence-v1"


@dataclass
class DavisOptions(TaskOptions):
    root: str = option(help="DAVIS-layout root")
    year: str = option("2016", help="DAVIS year", choices=DavisDataset.YEARS)
    split: str = option("val", help="image set (ImageSets/<year>/<split>.txt)")
    size: int = option(448, help="frame shorter side")
    sequences: list = option(None, help="sequences to evaluate (default: all of the split)")
    n_last: int = option(7, help="previous predicted frames kept as context, besides the first frame")
    topk: int = option(5, help="neighbours kept per target cell over all context frames")
    radius: int = option(12, help="neighbourhood radius in backbone patches (s·radius cells on an s× grid)")
    temperature: float = option(0.1, help="affinity exp(cos / temperature)")


def sequence_entry_key(extractor: FeatureExtractor, options: DavisOptions, sequence: str, frame_keys: list[str],
                       mask_keys: list[str]) -> str:
    """Identity of one sequence's scores: everything they depend on — the model (:attr:`FeatureExtractor.identity`:
    method, backbone weights, upsampler weights and structure), the frame size, year and split, the sequence's name and
    the bytes of its frames and masks (sha256 each), the propagation settings and :data:`SEQUENCE_ENTRY_VERSION`."""
    o = options
    return cache_key({"kind": SEQUENCE_ENTRY_VERSION, **extractor.identity, "size": o.size, "year": o.year,
                      "split": o.split, "sequence": sequence, "frames": frame_keys, "masks": mask_keys,
                      "n_last": o.n_last, "topk": o.topk, "radius_patches": o.radius,
                      "radius_cells": o.radius * extractor.scale, "temperature": float(o.temperature)},
                     length=24, structured=True)


@register_task("davis", DavisOptions, help="video object segmentation by label propagation (J&F)",
               metric="J&F-Mean", higher_is_better=True, label="DAVIS J&F")
def run(extractor: FeatureExtractor, options: DavisOptions, progress: bool = True) -> dict:
    """Semi-supervised VOS by label propagation (DINO protocol) on a DAVIS-layout root.

    Frames are resized so that the shorter side is ``size`` (multiples of the patch); predictions are made at
    the original frame size. ``radius`` is in backbone patches: on an s× grid (s = the method's scale) the window
    spans s·radius cells, so every method sees the same spatial neighbourhood.

    Resumable: with a cache folder (``extractor.cache_dir``), each finished sequence's per-object scores
    (:func:`~wrcup.eval.metrics.davis_sequence_scores`, all the summary needs) are written there at once, keyed
    by :func:`sequence_entry_key`; a run that was killed computes only the sequences without an entry, and its
    scores equal those of an uninterrupted run exactly. ``resumed_sequences`` counts the sequences read back.
    """
    o = options
    data = DavisDataset(o.root, year=o.year, split=o.split, sequences=o.sequences)
    patch = extractor.backbone.patch_size
    scores, resumed = {}, 0
    t0 = time.perf_counter()
    for seq in tqdm(data.sequences, desc=f"davis/{extractor.method}", disable=not progress, unit="seq"):
        frames = data.frames(seq)
        frame_keys = [file_key(path) for path in frames]
        entry_file = None
        if extractor.cache_dir is not None:
            key = sequence_entry_key(extractor, o, seq, frame_keys, [file_key(m) for m in data.masks(seq)])
            entry_file = extractor.cache_dir / f"davis-sequence-{key}.safetensors"
        entry = read_entry(entry_file, ("objects",))
        if entry is not None:
            scores[seq] = entry["objects"].numpy()
            resumed += 1
            continue
        gt = data.load_masks(seq)

        def features():
            for path, key in zip(frames, frame_keys):
                image = resize_to_grid(data.load_frame(path), o.size, patch)
                yield extractor(image[None], keys=[key])[0].float().cpu()

        # one bar per sequence over its frames: a 4× sequence takes minutes
        frame_bar = tqdm(features(), total=len(frames), desc=seq, disable=not progress, unit="frame", leave=False)
        preds = torch.stack(list(propagate_labels(
            frame_bar, gt[0], tuple(gt.shape[-2:]), n_last=o.n_last, topk=o.topk, radius=o.radius * extractor.scale,
            temperature=o.temperature, progress=False)))
        scores[seq] = davis_sequence_scores(preds, gt, name=seq)
        if entry_file is not None:
            write_entry(entry_file, {"objects": torch.from_numpy(scores[seq])})
    result = davis_summary(scores)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["resumed_sequences"] = resumed
    result["settings"] = {"size": o.size, "n_last": o.n_last, "topk": o.topk, "radius_patches": o.radius,
                          "temperature": o.temperature, "year": o.year, "split": o.split}
    return result
