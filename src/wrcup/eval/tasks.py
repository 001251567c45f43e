"""Task runners: a model + a method + a dataset → a JSON-ready result dict.

Each runner is deterministic (fixed seeds, no random augmentation), shows progress, and can cache the
backbone features on disk (``cache_dir``), which every method shares.
"""
from __future__ import annotations

import time
import zlib
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


# ------------------------------------------------------------------------------------------ shared helpers
def _subsample(items: list, max_items: int | None) -> list:
    """At most ``max_items`` items spread evenly over the list (first one included); deterministic."""
    if max_items is None or max_items >= len(items):
        return list(items)
    if max_items < 1:
        raise ValueError(f"max_images must be a positive int, got {max_items!r}")
    return [items[(i * len(items)) // max_items] for i in range(max_items)]


def _center_square(image: torch.Tensor, target: torch.Tensor | None = None):
    """Crop 3×H×W (and an H×W target) to the central min(H, W) square."""
    H, W = image.shape[-2:]
    s = min(H, W)
    top, left = (H - s) // 2, (W - s) // 2
    image = image[..., top:top + s, left:left + s]
    return image, (None if target is None else target[..., top:top + s, left:left + s])


def _train_view(image: torch.Tensor, target: torch.Tensor, size: int, nearest_dtype=None):
    """Training view of a probe sample: the central square, image resized to ``size``×``size`` (antialiased
    bilinear), target to the same size by nearest neighbour (labels and depth must not be blended)."""
    image, target = _center_square(image, target)
    image = F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)[0].clamp(0, 1)
    target = F.interpolate(target[None, None].float(), size=(size, size), mode="nearest")[0, 0]
    return image, target.to(nearest_dtype or target.dtype)


class _FeatureTargetSet(torch.utils.data.Dataset):
    """(features C×h×w float16 → float32, target H×W) pairs held in RAM for probe training."""

    def __init__(self, target_dtype: torch.dtype):
        self.features: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
        self.target_dtype = target_dtype

    def add(self, features: torch.Tensor, target: torch.Tensor) -> None:
        self.features.append(features.detach().to("cpu", torch.float16))
        self.targets.append(target.cpu().to(torch.uint8) if self.target_dtype == torch.int64 else target.cpu().float())

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int):
        return self.features[index].float(), self.targets[index].to(self.target_dtype)


def _check_size(size, name: str = "size") -> int:
    from .._checks import check_positive_int

    return check_positive_int(size, name)


def _patch(extractor: FeatureExtractor) -> int:
    return extractor.backbone.patch_size


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)


# -------------------------------------------------------------------------------------------- seg-probe
SEG_DATASETS = ("camvid", "voc", "ade20k", "cityscapes", "cocostuff", "davis-fg")
# (train split, evaluation split) defaults of each reader
_SEG_SPLITS = {"camvid": ("train", "val"), "voc": ("train", "val"), "ade20k": ("training", "validation"),
               "cityscapes": ("train", "val"), "cocostuff": ("train2017", "val2017")}


def _segmentation_reader(dataset: str, root, split: str):
    from ..data import (ADE20KDataset, CamVidDataset, CityscapesDataset, CocoStuffDataset,
                        VOCSegmentationDataset)

    cls = {"camvid": CamVidDataset, "voc": VOCSegmentationDataset, "ade20k": ADE20KDataset,
           "cityscapes": CityscapesDataset, "cocostuff": CocoStuffDataset}[dataset]
    return cls(root, split=split)


class _DavisForeground:
    """Frames of chosen DAVIS sequences (every ``frame_step``-th annotated frame) with binary labels
    (0 background, 1 any object; 2017 void 255 is background as in the DAVIS toolkit)."""

    num_classes = 2
    class_names = ("background", "foreground")

    def __init__(self, davis, sequences: list[str], frame_step: int):
        self.davis = davis
        self.samples = []
        for seq in sequences:
            frames = {p.stem: p for p in davis.frames(seq)}
            for mask in davis.masks(seq)[::frame_step]:
                if mask.stem in frames:
                    self.samples.append((frames[mask.stem], mask))

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[Path, torch.Tensor, torch.Tensor]:
        frame, mask = self.samples[index]
        return frame, self.davis.load_frame(frame), (self.davis.load_mask(mask) > 0).long()


class _ReaderAdapter:
    """Uniform ``load(i) → (image path, image, label)`` over the segmentation readers."""

    def __init__(self, reader, indices: list[int]):
        self.reader, self.indices = reader, indices
        self.num_classes, self.class_names = reader.num_classes, reader.class_names

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, index: int):
        sample = self.reader[self.indices[index]]
        return sample["image_path"], sample["image"], sample["label"]


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


def seg_probe(extractor: FeatureExtractor, dataset: str, root: str | Path, size: int = 448, epochs: int = 20,
              lr: float = 5e-4, batch_size: int = 4, max_images: int | None = None,
              train_split: str | None = None, val_split: str | None = None,
              train_sequences: list[str] | None = None, test_sequences: list[str] | None = None,
              frame_step: int = 5, davis_year: str = "2016", davis_split: str = "val",
              seed: int = 0, progress: bool = True) -> dict:
    """Semantic segmentation by a linear probe (1×1 conv) on the method's features.

    Training views: the central square of each training image, resized to ``size``×``size``; labels cropped the
    same way and resized to ``size``×``size`` by nearest neighbour (the loss is taken there, logits upsampled
    bilinearly). Evaluation: every evaluation image whole, shorter side ``size`` (sides multiples of the patch),
    prediction upsampled to the label's own resolution; 255 ignored. Training features are held in RAM as
    float16 (at 448 and a 2× grid: 64·64·384·2 B = 3 MB per image).

    ``dataset``: ``camvid``/``voc``/``ade20k``/``cityscapes``/``cocostuff`` (reader splits default to the
    usual train → val ones) or ``davis-fg`` (foreground/background on DAVIS frames: every ``frame_step``-th
    annotated frame; training and test sequences disjoint, see :func:`davis_fg_split`).
    ``max_images`` keeps at most that many images of each split, spread evenly (deterministic).

    Returns ``{"mIoU", "pixel_accuracy", "mean_class_accuracy" (percent), "per_class_iou" {class: percent or
    None}, "num_train_images", "num_val_images", "train_loss" (per epoch), "settings"}``.
    """
    from .._checks import check_choice
    from .metrics import ConfusionMatrix
    from .probe import predict_segmentation, train_linear_probe

    check_choice(dataset, "dataset", SEG_DATASETS)
    size = _check_size(size)
    patch = _patch(extractor)
    size = max(patch, round(size / patch) * patch)
    _seed_all(seed)
    settings = {"dataset": dataset, "size": size, "epochs": epochs, "lr": lr, "batch_size": batch_size,
                "max_images": max_images, "seed": seed}
    if dataset == "davis-fg":
        from ..data.davis import DavisDataset

        davis = DavisDataset(root, year=davis_year, split=davis_split)
        train_seqs, test_seqs = davis_fg_split(davis.sequences, train_sequences, test_sequences)
        train_set = _DavisForeground(davis, train_seqs, frame_step)
        val_set = _DavisForeground(davis, test_seqs, frame_step)
        train_set.samples = _subsample(train_set.samples, max_images)
        val_set.samples = _subsample(val_set.samples, max_images)
        settings.update(train_sequences=train_seqs, test_sequences=test_seqs, frame_step=frame_step,
                        davis_year=davis_year, davis_split=davis_split)
    else:
        default_train, default_val = _SEG_SPLITS[dataset]
        train_split, val_split = train_split or default_train, val_split or default_val
        train_reader = _segmentation_reader(dataset, root, train_split)
        val_reader = _segmentation_reader(dataset, root, val_split)
        train_set = _ReaderAdapter(train_reader, _subsample(list(range(len(train_reader))), max_images))
        val_set = _ReaderAdapter(val_reader, _subsample(list(range(len(val_reader))), max_images))
        settings.update(train_split=train_split, val_split=val_split)
    num_classes, class_names = train_set.num_classes, train_set.class_names
    method = extractor.method

    items = _FeatureTargetSet(torch.int64)
    for i in tqdm(range(len(train_set)), desc=f"seg-probe/{method} features", disable=not progress, unit="img"):
        path, image, label = train_set.load(i)
        image, label = _train_view(image, label, size, torch.int64)
        feats = extractor(image[None], keys=[file_key(path) + f"|square{size}"])[0]
        items.add(feats, label)
    probe, history = train_linear_probe(items, num_classes=num_classes, epochs=epochs, lr=lr,
                                        batch_size=batch_size, seed=seed, progress=progress,
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


# ------------------------------------------------------------------------------------------ depth-probe
def depth_probe(extractor: FeatureExtractor, root: str | Path, size: int = 448, epochs: int = 20,
                lr: float = 5e-4, batch_size: int = 4, max_images: int | None = None, train_split: str = "train",
                val_split: str = "test", seed: int = 0, progress: bool = True) -> dict:
    """Monocular depth by a linear probe on NYUv2-layout data (:class:`wrcup.data.NYUv2DepthDataset`).

    Views as in :func:`seg_probe` (training: central square at ``size``, depth resized by nearest neighbour so
    missing values stay missing; evaluation: whole image, shorter side ``size``, prediction at the depth map's
    resolution). The probe is :func:`wrcup.eval.probe.train_depth_probe` (scale-invariant log loss + spatial
    gradient matching). Metrics per image over valid pixels (finite, > 0), then averaged over images: RMSE
    (metres), abs rel, δ1 (percent of pixels with max(pred/gt, gt/pred) < 1.25). No median scaling.
    """
    from ..data.depth import NYUv2DepthDataset
    from .metrics import abs_rel, delta1, rmse
    from .probe import predict_depth, train_depth_probe

    size = _check_size(size)
    patch = _patch(extractor)
    size = max(patch, round(size / patch) * patch)
    _seed_all(seed)
    train_data = NYUv2DepthDataset(root, split=train_split)
    val_data = NYUv2DepthDataset(root, split=val_split)
    train_idx = _subsample(list(range(len(train_data))), max_images)
    val_idx = _subsample(list(range(len(val_data))), max_images)
    method = extractor.method
    items = _FeatureTargetSet(torch.float32)
    for i in tqdm(train_idx, desc=f"depth-probe/{method} features", disable=not progress, unit="img"):
        sample = train_data[i]
        depth = torch.where(sample["valid"], sample["depth"], torch.zeros_like(sample["depth"]))
        image, depth = _train_view(sample["image"], depth, size, torch.float32)
        items.add(extractor(image[None], keys=[file_key(sample["image_path"]) + f"|square{size}"])[0], depth)
    probe, history = train_depth_probe(items, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
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
        raise ValueError(f"NYUv2 root {str(root)!r}: no evaluation image has valid depth")
    n = len(per_image)
    return {"rmse": sum(r[0] for r in per_image) / n, "abs_rel": sum(r[1] for r in per_image) / n,
            "delta1": 100 * sum(r[2] for r in per_image) / n, "num_train_images": len(train_idx),
            "num_val_images": n, "train_loss": history,
            "settings": {"size": size, "epochs": epochs, "lr": lr, "batch_size": batch_size,
                         "max_images": max_images, "train_split": train_split, "val_split": val_split,
                         "seed": seed}}


# -------------------------------------------------------------------------------------------- discovery
DISCOVERY_DATASETS = ("voc07", "voc12", "coco20k", "davis-first-frames")
# TokenCut's cosine thresholds: 0.2 on VOC, 0.3 on COCO20K; DAVIS follows VOC.
DISCOVERY_TAU = {"voc07": 0.2, "voc12": 0.2, "coco20k": 0.3, "davis-first-frames": 0.2}


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
    """The backbone's last-block keys of one image, 1×dim×h×w float32, cached (float16) like the features.

    The cache entry is tagged "keys" so it never collides with the feature cache of the same image.
    ``remove_bias`` subtracts the key projection's bias, which attention ignores (it adds the same q·b to
    every logit of a query) but which dominates the cosine between keys of some backbones.
    """
    from safetensors.torch import save_file

    from .._io import atomic_path, read_cache_entry

    backbone = extractor.backbone
    device = next(backbone.parameters()).device
    cache = extractor.cache_file(key, image.shape[-2:], kind="keys")
    entry = read_cache_entry(cache, ("keys",))
    if entry is not None:
        keys = entry["keys"].float()[None].to(device)
    else:
        keys = backbone.extract(image[None].to(device), facets=True)["facets"]["k"].float()
        if cache is not None:
            with atomic_path(cache) as tmp:
                save_file({"keys": keys[0].half().cpu().contiguous()}, str(tmp))
    bias = key_bias(backbone) if remove_bias else None
    return keys if bias is None else keys - bias.to(keys.device).view(1, -1, 1, 1)


@torch.inference_mode()
def upsample_like_method(extractor: FeatureExtractor, image: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """Apply the extractor's method to any 1×dim×h×w map of the image (e.g. the keys instead of the features):
    ``none`` returns it, ``bilinear`` doubles it bilinearly, ``learned`` runs the model's upsampler on it."""
    if extractor.method == "none":
        return low
    if extractor.method == "bilinear":
        return F.interpolate(low, scale_factor=2, mode="bilinear", align_corners=False)
    return extractor.upsampler(extractor.backbone.normalise(image[None].to(low.device)), low)


def _discovery_items(dataset: str, root, year_split: str, coco_annotations, coco_image_list, davis_year,
                     davis_split):
    """→ list of (image path, K×4 ground-truth boxes) and a loader path → image."""
    from ..data.images import load_image

    if dataset in ("voc07", "voc12"):
        from ..data.detection import VOCDetectionDataset

        data = VOCDetectionDataset(root, year="2007" if dataset == "voc07" else "2012", split=year_split,
                                   load_images=False)
        return [(s["image_path"], s["boxes"]) for s in (data[i] for i in range(len(data)))], load_image
    if dataset == "coco20k":
        from ..data.detection import Coco20kDataset

        if coco_annotations is None or coco_image_list is None:
            raise ValueError("coco20k needs coco_annotations (instances JSON) and coco_image_list (text file)")
        data = Coco20kDataset(root, coco_annotations, coco_image_list, load_images=False)
        return [(s["image_path"], s["boxes"]) for s in (data[i] for i in range(len(data)))], load_image
    from ..data.davis import DavisDataset, davis_first_frame_boxes

    data = DavisDataset(root, year=davis_year, split=davis_split)
    return [(e["image_path"], e["boxes"]) for e in davis_first_frame_boxes(data)], DavisDataset.load_frame


def discovery(extractor: FeatureExtractor, dataset: str, root: str | Path, size: int = 448,
              tau: float | None = None, eps: float = 1e-5, max_images: int | None = None,
              split: str = "trainval", coco_annotations: str | Path | None = None,
              coco_image_list: str | Path | None = None, davis_year: str = "2016", davis_split: str = "val",
              remove_key_bias: bool = True, progress: bool = True) -> dict:
    """Unsupervised single-object discovery: TokenCut on the last block's keys, scored by CorLoc.

    Each image is resized (shorter side ``size``, sides multiples of the patch); the keys are taken at the
    backbone grid and, for ``bilinear``/``learned``, upsampled 2× with the same method. The learned upsampler
    was trained to upsample the final (post-norm) features, not the keys; running it on the keys is what the
    paper's protocol ("TokenCut on upsampled keys") implies and is done as is. The keys have the features'
    width, so the network accepts them, but they are out of its training distribution, so read the ``learned``
    number as a measure of how well the upsampler transfers to another map of the same image.

    The predicted box (in original image pixels: the grid covers the image uniformly) counts when its IoU with
    any ground-truth box is ≥ 0.5. Datasets: ``voc07``/``voc12`` (VOC XML, ``split`` "trainval"),
    ``coco20k`` (``root`` = image folder, plus ``coco_annotations`` and ``coco_image_list``), and
    ``davis-first-frames`` (offline: the box around each object of each sequence's first-frame mask).
    ``tau`` defaults to 0.2 (VOC, DAVIS) or 0.3 (COCO20K).

    ``remove_key_bias`` (default on) subtracts the key projection's bias before the graph is built. Attention
    is blind to that bias, but on DINOv2-style backbones it makes every pair of keys nearly parallel (on
    DAVIS first frames with the embedded ViT-S/14 at 448 the 5th percentile of key cosines is 0.73–0.78), so
    with ``tau`` 0.2 the graph is complete and the cut is arbitrary (CorLoc 0/5 there; 4/5 without the bias).
    The dense eigensolve costs O((hw)³): at 448 input
    a 2× grid is 64×64 = 4096 nodes (seconds per image on a GPU, much longer on CPU).

    Returns ``{"corloc" (percent), "num_images", "per_image": [{"name", "box", "hit"}], "settings"}``.
    """
    from .._checks import check_choice
    from .metrics import box_iou, corloc
    from .tokencut import tokencut_box

    check_choice(dataset, "dataset", DISCOVERY_DATASETS)
    size = _check_size(size)
    tau = DISCOVERY_TAU[dataset] if tau is None else float(tau)
    items, loader = _discovery_items(dataset, root, split, coco_annotations, coco_image_list, davis_year,
                                     davis_split)
    items = _subsample(items, max_images)
    if not items:
        raise ValueError(f"{dataset} root {str(root)!r}: no images")
    patch = _patch(extractor)
    preds, gts, per_image = [], [], []
    for path, boxes in tqdm(items, desc=f"discovery/{extractor.method}", disable=not progress, unit="img"):
        image = loader(path)
        resized = resize_to_grid(image, size, patch)
        keys = upsample_like_method(extractor, resized,
                                    last_block_keys(extractor, resized, file_key(path), remove_key_bias))
        box, _ = tokencut_box(keys[0].float().cpu(), tuple(image.shape[-2:]), tau=tau, eps=eps)
        hit = bool(len(boxes)) and bool((box_iou(torch.tensor(box), boxes) >= 0.5).any())
        preds.append(box)
        gts.append(boxes)
        name = Path(path).parent.name if dataset == "davis-first-frames" else Path(path).stem
        per_image.append({"name": name, "box": [round(v, 2) for v in box], "hit": hit})
    return {"corloc": 100 * corloc(preds, gts), "num_images": len(items), "per_image": per_image,
            "settings": {"dataset": dataset, "size": size, "tau": tau, "eps": eps, "max_images": max_images,
                         "remove_key_bias": remove_key_bias,
                         "grid": "keys of the last block" + ("" if extractor.method == "none" else ", upsampled 2×")}}


# --------------------------------------------------------------------------------------- correspondence
CORRESPONDENCE_DATASETS = ("spair", "homography", "synthetic")
PCK_ALPHAS = (0.1, 0.05, 0.01)


def _match(extractor, source, target, source_points, source_key, target_key, size):
    """Transfer (x, y) points given with pixel centres at integers (the readers' convention) from ``source``
    to ``target`` (both 3×H×W); returns the predicted target points in the same convention."""
    from .correspondence import transfer_keypoints

    patch = _patch(extractor)
    src = extractor(resize_to_grid(source, size, patch)[None], keys=source_key)[0].float().cpu()
    trg = extractor(resize_to_grid(target, size, patch)[None], keys=target_key)[0].float().cpu()
    # transfer_keypoints puts the origin at the top-left pixel corner: shift by half a pixel each way
    pred = transfer_keypoints(src, trg, source_points.double() + 0.5, tuple(source.shape[-2:]),
                              tuple(target.shape[-2:]))
    return pred - 0.5


def correspondence(extractor: FeatureExtractor, dataset: str, root: str | Path, size: int = 448,
                   max_images: int | None = None, split: str = "test", category: str | None = None,
                   pairs_per_image: int = 2, max_shift: float = 0.15, grid_step: int = 16, seed: int = 0,
                   progress: bool = True) -> dict:
    """Keypoint transfer by cosine nearest neighbour of the method's features, scored by PCK@α (α = 0.1,
    0.05, 0.01).

    Datasets: ``spair`` (SPair-71k layout, ``split``/``category``; threshold = α × the larger side of the
    target object's box), ``homography`` (``root`` holds graf1.png, graf3.png and H1to3p.xml from
    opencv-doc; source points on a ``grid_step`` grid, scored where they land inside the target; threshold =
    α × the target's larger side) and ``synthetic`` (``pairs_per_image`` seeded random homographies of every
    photo in the folder ``root``, photo resized to shorter side ``size`` first; threshold as for
    ``homography``). Features: each image resized to shorter side ``size``; the grid covers it uniformly, so
    predictions are in original pixels. ``max_images`` caps the pairs (SPair, homography) or photos (synthetic).
    PCK is averaged per pair (pairs without scorable points are skipped).

    Returns ``{"pck@0.1", "pck@0.05", "pck@0.01" (percent), "num_pairs", "num_points", "settings"}``.
    """
    from .._checks import check_choice
    from .metrics import pck

    check_choice(dataset, "dataset", CORRESPONDENCE_DATASETS)
    size = _check_size(size)
    preds, gts, lengths, valids = [], [], [], []
    desc = f"correspondence/{extractor.method}"
    if dataset == "spair":
        from ..data.correspondence import SPairDataset

        data = SPairDataset(root, split=split, category=category)
        for i in tqdm(_subsample(list(range(len(data))), max_images), desc=desc, disable=not progress, unit="pair"):
            s = data[i]
            preds.append(_match(extractor, s["source_image"], s["target_image"], s["source_points"],
                                [file_key(s["source_path"])], [file_key(s["target_path"])], size))
            gts.append(s["target_points"])
            lengths.append(s["pck_threshold"])
            valids.append(torch.ones(len(s["source_points"]), dtype=torch.bool))
    elif dataset == "homography":
        from ..data.correspondence import HomographyPair

        data = HomographyPair(root, grid_step=grid_step)
        s = data[0]
        preds.append(_match(extractor, s["source"], s["target"], s["source_points"],
                            [file_key(data.source_path)], [file_key(data.target_path)], size))
        gts.append(s["target_points"])
        lengths.append(s["pck_threshold"])
        valids.append(s["valid"])
    else:
        from ..data.correspondence import synthetic_homography_pairs
        from ..data.images import list_images, load_image

        photos = _subsample(sorted(list_images(root)), max_images)
        if not photos:
            raise ValueError(f"synthetic: no photos in {str(root)!r}")
        patch = _patch(extractor)
        for path in tqdm(photos, desc=desc, disable=not progress, unit="photo"):
            photo = resize_to_grid(load_image(path), size, patch)
            # one generator per photo, seeded from its name: its pairs do not depend on which photos are used
            generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(Path(path).name.encode()))
            pairs = synthetic_homography_pairs(photo, pairs_per_image, generator=generator, max_shift=max_shift,
                                               grid_step=grid_step)
            for j, s in enumerate(pairs):
                # the warped target is determined by the seed and the pair's position, so it can be cached
                target_key = [f"{file_key(path)}|{size}|synthetic|{seed}|{j}|{max_shift}"]
                preds.append(_match(extractor, s["source"], s["target"], s["source_points"],
                                    [file_key(path) + f"|{size}"], target_key, size))
                gts.append(s["target_points"])
                lengths.append(s["pck_threshold"])
                valids.append(s["valid"])
    scores = pck(preds, gts, lengths, alphas=PCK_ALPHAS, valid=valids)
    return {**{f"pck@{a}": 100 * scores[a] for a in PCK_ALPHAS}, "num_pairs": len(preds),
            "num_points": int(sum(int(v.sum()) for v in valids)),
            "settings": {"dataset": dataset, "size": size, "max_images": max_images, "split": split,
                         "category": category, "pairs_per_image": pairs_per_image, "max_shift": max_shift,
                         "grid_step": grid_step, "seed": seed}}


# ------------------------------------------------------------------------------------------------ dispatch
TASKS = ("fidelity", "davis", "seg-probe", "depth-probe", "discovery", "correspondence")
_RUNNERS = {"fidelity": fidelity, "davis": davis, "seg-probe": seg_probe, "depth-probe": depth_probe,
            "discovery": discovery, "correspondence": correspondence}


def run_task(task: str, extractor: FeatureExtractor, **options) -> dict:
    """Run the task named ``task`` (one of :data:`TASKS`) with keyword ``options`` of its runner; the global
    torch seed is reset first so results do not depend on what ran before."""
    from .._checks import check_choice

    check_choice(task, "task", TASKS)
    torch.manual_seed(0)
    return _RUNNERS[task](extractor, **options)
