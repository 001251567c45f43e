"""Unsupervised single-object discovery: TokenCut on the last block's keys, scored by CorLoc."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..._cache import cached
from ...data.davis import DavisDataset
from ...data.registry import get_dataset, list_datasets
from ..extract import FeatureExtractor, file_key, resize_to_grid
from ..metrics import box_iou, corloc
from ..tokencut import tokencut_box
from . import register_task
from ._common import TaskOptions, check_size, option, subsample


@dataclass
class DiscoveryOptions(TaskOptions):
    dataset: str = option(help="images with ground-truth boxes", choices=lambda: list_datasets("discovery"))
    root: str = option(help="VOC<year> folder, COCO image folder, or DAVIS root")
    size: int = option(448, help="image shorter side")
    tau: float = option(None, help="graph threshold (default: the dataset's, 0.2 VOC/DAVIS, 0.3 COCO20K)")
    eps: float = option(1e-5, help="weight of the graph's edges below tau")
    max_images: int = option(None, help="at most this many images (spread evenly)")
    split: str = option("trainval", help="VOC image set")
    coco_annotations: str = option(None, help="coco20k: instances JSON")
    coco_image_list: str = option(None, help="coco20k: image list text file")
    davis_year: str = option("2016", help="davis-first-frames: DAVIS year", choices=DavisDataset.YEARS)
    davis_split: str = option("val", help="davis-first-frames: DAVIS image set")
    remove_key_bias: bool = option(True, help="subtract the key projection's bias (attention ignores it) before "
                                              "TokenCut")


def key_bias(backbone) -> torch.Tensor | None:
    """The bias of the last block's key projection (dim,), or None when it has none."""
    attn = backbone.model.blocks[-1].attn
    if getattr(attn, "k_bias", None) is not None:
        return attn.k_bias.detach().float()
    bias = getattr(getattr(attn, "qkv", None), "bias", None)
    if bias is None:
        return None
    return bias.detach().float().reshape(3, -1)[1]


def last_block_keys(extractor: FeatureExtractor, image: torch.Tensor, key: str | None = None,
                    remove_bias: bool = False) -> torch.Tensor:
    """The backbone's last-block keys of one image 3×H×W, 1×dim×h×w float32, cached (float16) like the features.

    The cache entry is tagged "keys" so it never collides with the feature cache of the same image.
    ``remove_bias`` subtracts the key projection's bias, which attention ignores (it adds the same q·b to
    every logit of a query) but which dominates the cosine between keys of some backbones.
    """
    backbone = extractor.backbone
    device = next(backbone.parameters()).device
    fresh = {}

    def compute():
        fresh["keys"] = backbone.extract(image[None].to(device), facets=True)["facets"]["k"].float()
        return {"keys": fresh["keys"][0].half()}

    entry = cached(extractor.cache_file(key, image.shape[-2:], kind="keys"), ("keys",), compute)
    # a fresh computation is used at full precision, as before the cache held it
    keys = fresh["keys"] if fresh else entry["keys"].float()[None].to(device)
    bias = key_bias(backbone) if remove_bias else None
    return keys if bias is None else keys - bias.to(keys.device).view(1, -1, 1, 1)


@register_task("discovery", DiscoveryOptions, help="object discovery by TokenCut on the last block's keys (CorLoc)",
               metric="corloc", higher_is_better=True, label="CorLoc")
def run(extractor: FeatureExtractor, options: DiscoveryOptions, progress: bool = True) -> dict:
    """Unsupervised single-object discovery: TokenCut on the last block's keys, scored by CorLoc.

    Each image is resized (shorter side ``size``, sides multiples of the patch); the keys are taken at the
    backbone grid and, for the other methods, upsampled (2× or 4×) with the same method. The learned upsampler
    was trained to upsample the final (post-norm) features, not the keys; running it on the keys is what the
    paper's protocol ("TokenCut on upsampled keys") implies and is done as is. The keys have the features'
    width, so the network accepts them, but they are out of its training distribution, so read the ``learned``
    number as a measure of how well the upsampler transfers to another map of the same image.

    The predicted box (in original image pixels: the grid covers the image uniformly) counts when its IoU with
    any ground-truth box is ≥ 0.5. Datasets (:mod:`wrcup.data.registry`, kind "discovery"): ``voc07``/``voc12``
    (VOC XML, ``split`` "trainval"), ``coco20k`` (``root`` = image folder, plus ``coco_annotations`` and
    ``coco_image_list``), and ``davis-first-frames`` (offline: the box around each object of each sequence's
    first-frame mask). ``tau`` defaults to the dataset's: 0.2 (VOC, DAVIS) or 0.3 (COCO20K).

    ``remove_key_bias`` (default on) subtracts the key projection's bias before the graph is built. Attention
    is blind to that bias, but on DINOv2-style backbones it makes every pair of keys nearly parallel (on
    DAVIS first frames with the embedded ViT-S/14 at 448 the 5th percentile of key cosines is 0.73–0.78), so
    with ``tau`` 0.2 the graph is complete and the cut is arbitrary (CorLoc 0/5 there; 4/5 without the bias).
    The dense eigensolve costs O((hw)³): at 448 input
    a 2× grid is 64×64 = 4096 nodes (seconds per image on a GPU, much longer on CPU).

    Returns ``{"corloc" (percent), "num_images", "per_image": [{"name", "box", "hit"}], "settings"}``.
    """
    o = options
    entry = get_dataset("discovery", o.dataset)
    size = check_size(o.size)
    tau = entry.info["tau"] if o.tau is None else float(o.tau)
    items = entry.open(o.root, **{name: getattr(o, name) for name in entry.options})
    items = subsample(items, o.max_images)
    if not items:
        raise ValueError(f"{o.dataset} root {str(o.root)!r}: no images")
    loader = entry.info["loader"]
    patch = extractor.backbone.patch_size
    preds, gts, per_image = [], [], []
    for item in tqdm(items, desc=f"discovery/{extractor.method}", disable=not progress, unit="img"):
        path, boxes = item["image_path"], item["boxes"]
        image = loader(path)
        resized = resize_to_grid(image, size, patch)
        keys = extractor.upsample(resized[None], last_block_keys(extractor, resized, file_key(path), o.remove_key_bias))
        box, _ = tokencut_box(keys[0].float().cpu(), tuple(image.shape[-2:]), tau=tau, eps=o.eps)
        hit = bool(len(boxes)) and bool((box_iou(torch.tensor(box), boxes) >= 0.5).any())
        preds.append(box)
        gts.append(boxes)
        per_image.append({"name": item["name"], "box": [round(v, 2) for v in box], "hit": hit})
    return {"corloc": 100 * corloc(preds, gts), "num_images": len(items), "per_image": per_image,
            "settings": {"dataset": o.dataset, "size": size, "tau": tau, "eps": o.eps, "max_images": o.max_images,
                         "remove_key_bias": o.remove_key_bias,
                         "grid": "keys of the last block" + (
                             "" if extractor.scale == 1 else f", upsampled {extractor.scale}×")}}
