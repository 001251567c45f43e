"""Keypoint transfer by cosine nearest neighbour of the method's features, scored by PCK."""
from __future__ import annotations

from dataclasses import dataclass

from tqdm.auto import tqdm

from ...data.registry import get_dataset, list_datasets
from ..correspondence import transfer_keypoints
from ..extract import FeatureExtractor, file_key, resize_to_grid
from ..metrics import pck
from . import register_task
from ._common import TaskOptions, check_size, option, subsample

PCK_ALPHAS = (0.1, 0.05, 0.01)


@dataclass
class CorrespondenceOptions(TaskOptions):
    dataset: str = option(help="image pairs with corresponding points",
                          choices=lambda: list_datasets("correspondence"))
    root: str = option(help="SPair-71k root, folder with graf1/graf3/H1to3p.xml, or photo folder")
    size: int = option(448, help="image shorter side")
    max_images: int = option(None, help="at most this many pairs (spair, homography) or photos (synthetic)")
    split: str = option("test", help="SPair split")
    category: str = option(None, help="SPair category")
    pairs_per_image: int = option(2, help="synthetic: homographies per photo")
    max_shift: float = option(0.15, help="synthetic: corner shift bound (fraction of size)")
    grid_step: int = option(16, help="homography/synthetic: keypoint grid step (px)")
    seed: int = option(0, help="synthetic: seed of the homographies")


def _match(extractor, source, target, source_points, source_key, target_key, size):
    """Transfer (x, y) points given with pixel centres at integers (the readers' convention) from ``source``
    to ``target`` (both 3×H×W); returns the predicted target points in the same convention."""
    patch = extractor.backbone.patch_size
    src = extractor(resize_to_grid(source, size, patch)[None], keys=source_key)[0].float().cpu()
    trg = extractor(resize_to_grid(target, size, patch)[None], keys=target_key)[0].float().cpu()
    # transfer_keypoints puts the origin at the top-left pixel corner: shift by half a pixel each way
    pred = transfer_keypoints(src, trg, source_points.double() + 0.5, tuple(source.shape[-2:]),
                              tuple(target.shape[-2:]))
    return pred - 0.5


@register_task("correspondence", CorrespondenceOptions, help="keypoint transfer by nearest neighbours "
               "(PCK@0.1/0.05/0.01)", metric="pck@0.1", higher_is_better=True, label="PCK@0.1")
def run(extractor: FeatureExtractor, options: CorrespondenceOptions, progress: bool = True) -> dict:
    """Keypoint transfer by cosine nearest neighbour of the method's features, scored by PCK@α (α = 0.1,
    0.05, 0.01).

    Datasets (:mod:`wrcup.data.registry`, kind "correspondence"): ``spair`` (SPair-71k layout,
    ``split``/``category``; threshold = α × the larger side of the target object's box), ``homography``
    (``root`` holds graf1.png, graf3.png and H1to3p.xml from opencv-doc; source points on a ``grid_step`` grid,
    scored where they land inside the target; threshold = α × the target's larger side) and ``synthetic``
    (``pairs_per_image`` seeded random homographies of every photo in the folder ``root``, photo resized to
    shorter side ``size`` first; threshold as for ``homography``). Features: each image resized to shorter side
    ``size``; the grid covers it uniformly, so predictions are in original pixels. ``max_images`` caps the pairs
    (SPair, homography) or photos (synthetic). PCK is averaged per pair (pairs without scorable points are
    skipped).

    Returns ``{"pck@0.1", "pck@0.05", "pck@0.01" (percent), "num_pairs", "num_points", "settings"}``.
    """
    o = options
    entry = get_dataset("correspondence", o.dataset)
    size = check_size(o.size)
    patch = extractor.backbone.patch_size
    pairs = entry.open(o.root, select=lambda items: subsample(items, o.max_images),
                       prepare=lambda image: resize_to_grid(image, size, patch),
                       **{name: getattr(o, name) for name in entry.options})
    preds, gts, lengths, valids = [], [], [], []
    for s in tqdm(pairs, desc=f"correspondence/{extractor.method}", disable=not progress, unit="pair"):
        source_key, target_key = file_key(s["source_path"]), file_key(s["target_path"])
        if "tag" in s:  # a pair generated from the prepared photo: its images depend on the size (and the tag)
            source_key, target_key = f"{source_key}|{size}", f"{target_key}|{size}|{s['tag']}"
        preds.append(_match(extractor, s["source"], s["target"], s["source_points"], [source_key], [target_key],
                            size))
        gts.append(s["target_points"])
        lengths.append(s["pck_threshold"])
        valids.append(s["valid"])
    scores = pck(preds, gts, lengths, alphas=PCK_ALPHAS, valid=valids)
    return {**{f"pck@{a}": 100 * scores[a] for a in PCK_ALPHAS}, "num_pairs": len(preds),
            "num_points": int(sum(int(v.sum()) for v in valids)),
            "settings": {"dataset": o.dataset, "size": size, "max_images": o.max_images, "split": o.split,
                         "category": o.category, "pairs_per_image": o.pairs_per_image, "max_shift": o.max_shift,
                         "grid_step": o.grid_step, "seed": o.seed}}
