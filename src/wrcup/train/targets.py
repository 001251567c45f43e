"""Training images and their backbone targets: the image pool, per-step RNGs and the (optionally cached) targets.

A :class:`TargetSource` serves one grid scale (one high-res view size); a run on several scales has one source per
scale, all sharing one cache folder (the entries are keyed on the scale).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .._cache import cache_key, cached, entry_is_usable, write_entry
from .._io import file_sha256
from .augment import random_aligned_crops
from .views import crop_images, downsample, square_view

__all__ = ["ImagePool", "TargetSource", "step_generator"]


def step_generator(seed: int, step: int, stream: int) -> torch.Generator:
    """An independent RNG per (seed, step, stream): no RNG state has to be checkpointed."""
    digest = hashlib.sha256(f"{seed}/{step}/{stream}".encode()).digest()
    g = torch.Generator()
    g.manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    return g


class ImagePool:
    """The training images of several folders, indexable; unreadable files are skipped and reported once."""

    def __init__(self, folders):
        from ..data.images import ImageFolder

        self.folders = [ImageFolder(f) for f in folders]
        self.paths = [p for f in self.folders for p in f.paths]
        self._owner = [(f, i) for f in self.folders for i in range(len(f))]

    @property
    def skipped(self) -> list:
        return [s for f in self.folders for s in f.skipped]

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> torch.Tensor:
        folder, local = self._owner[index]
        return folder[local]["image"]


class TargetSource:
    """Low-res views and backbone targets for a list of images, at one grid scale.

    Online: runs the frozen backbone every step (random crops per step). Cached (``cfg.cache_targets``): each
    image gets ``crops`` fixed crops (seeded by the image index), and its low-res view, low-res features
    and crop features are computed once and stored (float16) — the backbone dominates CPU training cost.

    ``high_res`` is the side of the high-res view (the low-res view is half of it); default ``cfg.high_res``
    (which must then be a single size).
    """

    def __init__(self, images, backbone, cfg, device, high_res: int | None = None):
        self.images, self.backbone, self.cfg, self.device = images, backbone, cfg, device
        self.high_res = int(cfg.high_res if high_res is None else high_res)
        self.low_res = self.high_res // 2
        self.patch = backbone.patch_size
        if self.low_res % backbone.patch_size or cfg.crop_align % backbone.patch_size:
            raise ValueError(f"high_res/2={self.low_res} and crop_align={cfg.crop_align} must be multiples of "
                             f"the backbone patch size {backbone.patch_size}")
        self.cache_dir = Path(cfg.cache_targets) if cfg.cache_targets else None
        self.need_full = float(cfg.loss_weights.get("full", 0.0)) != 0.0
        self._digests: list[str | None] = [None] * len(images)
        self._weights_id = backbone.weights_identity() if self.cache_dir else None

    def _views(self, idx: list[int], gens: list[torch.Generator], full: bool | None = None):
        """The step's views and targets; ``full`` (default: whether the "full" loss is on) also runs the backbone
        on the whole high-res view, the costliest pass (a 896 view has 4× the tokens of a 448 one)."""
        high = torch.stack([square_view(self.images.load(i), self.high_res) for i in idx]).to(self.device)
        low = downsample(high, self.low_res)
        boxes = torch.stack([random_aligned_crops(g, self.high_res, self.low_res, self.cfg.crop_align, self.cfg.crops)
                             for g in gens]) if self.cfg.crops else torch.zeros(len(idx), 0, 2, dtype=torch.long)
        # backbone outputs are inference-mode tensors: clone them so autograd may save them
        z_low = self.backbone(low).clone()
        crop_t = None
        if self.cfg.crops:
            crop_t = self.backbone(crop_images(high, boxes, self.low_res)).clone()
            crop_t = crop_t.reshape(len(idx), self.cfg.crops, *crop_t.shape[1:])
        z_high = self.backbone(high).clone() if (self.need_full if full is None else full) else None
        return low, z_low, crop_t, boxes, z_high

    def _cache_file(self, i: int) -> Path:
        # keyed on the image's bytes, not its path or mtime: a copied or restored image folder keeps its cache,
        # and a changed image, backbone weights or crop setting gets new targets. The key format is unchanged
        # since v2 (one scale per run): existing caches stay valid (tests/train/test_target_cache.py pins it).
        key = cache_key({"version": "v2", "image": self._image_digest(i), "backbone": self.cfg.backbone,
                         "weights": self._weights_id, "high_res": self.high_res, "crops": self.cfg.crops,
                         "crop_align": self.cfg.crop_align, "seed": self.cfg.crop_seed()}, length=20)
        return self.cache_dir / (key + ".safetensors")

    def _image_digest(self, i: int) -> str:
        if self._digests[i] is None:
            self._digests[i] = file_sha256(self.images.paths[i])
        return self._digests[i]

    def _full_file(self, i: int) -> Path:
        return self._cache_file(i).with_suffix(".full.safetensors")

    def _target_names(self) -> tuple[str, ...]:
        return ("low", "z_low", "boxes") + (("crops",) if self.cfg.crops else ())

    def _compute_targets(self, i: int) -> dict[str, torch.Tensor]:
        """Cached targets of image ``i``: its crops are seeded by the index, so a recomputed entry is the same."""
        # the full-view target has a file of its own (_compute_full): not computed here
        low, z_low, crop_t, boxes, _ = self._views([i], [step_generator(self.cfg.crop_seed(), i, stream=11)],
                                                   full=False)
        tensors = {"low": (low[0] * 255).round().to(torch.uint8).cpu(), "z_low": z_low[0].half().cpu().contiguous(),
                   "boxes": boxes[0].cpu()}
        if crop_t is not None:
            tensors["crops"] = crop_t[0].half().cpu().contiguous()
        return tensors

    def _compute_full(self, i: int) -> dict[str, torch.Tensor]:
        high = square_view(self.images.load(i), self.high_res)[None].to(self.device)
        return {"z_high": self.backbone(high)[0].half().cpu().contiguous()}

    def _targets(self, i: int) -> dict[str, torch.Tensor]:
        return cached(self._cache_file(i), self._target_names(), lambda: self._compute_targets(i))

    def _full(self, i: int) -> dict[str, torch.Tensor]:
        return cached(self._full_file(i), ("z_high",), lambda: self._compute_full(i))

    def fill_cache(self, indices: list[int], show_progress: bool) -> None:
        """Compute the entries of ``indices`` that are missing or look damaged from their header (truncated:
        reported once, then recomputed); a corrupt data section is caught and repaired when :meth:`batch` reads it."""
        todo = [i for i in indices if not entry_is_usable(self._cache_file(i), self._target_names())]
        desc = f"caching backbone targets ({self.high_res})"
        for i in tqdm(todo, desc=desc, disable=not show_progress or not todo, unit="img"):
            write_entry(self._cache_file(i), self._compute_targets(i))
        # full-view targets live in a file of their own, so adding the "full" loss reuses the crop cache
        todo = [i for i in indices if self.need_full and not entry_is_usable(self._full_file(i), ("z_high",))]
        desc = f"caching full-view targets ({self.high_res})"
        for i in tqdm(todo, desc=desc, disable=not show_progress or not todo, unit="img"):
            write_entry(self._full_file(i), self._compute_full(i))

    def batch(self, idx: list[int], step: int, offset: int = 0):
        """→ low B×3×S×S [0,1], z_low B×C×h×w, crop targets B×n×C×h×w (or None), boxes B×n×2 in high-res
        tokens, full-view targets B×C×2h×2w (or None).

        ``offset`` is the position of ``idx[0]`` in the step's global batch (it seeds the crops).
        """
        if self.cache_dir is None:
            gens = [step_generator(self.cfg.seed, step, stream=100 + offset + j) for j in range(len(idx))]
            low, z_low, crop_t, boxes, z_high = self._views(idx, gens)
        else:
            # an entry damaged since fill_cache (another process, a full disk) is recomputed here, not a crash
            items = [self._targets(i) for i in idx]
            low = torch.stack([d["low"] for d in items]).float().div(255).to(self.device)
            z_low = torch.stack([d["z_low"] for d in items]).float().to(self.device)
            boxes = torch.stack([d["boxes"] for d in items])
            crop_t = torch.stack([d["crops"] for d in items]).float().to(self.device) if self.cfg.crops else None
            z_high = torch.stack([self._full(i)["z_high"] for i in idx]).float().to(
                self.device) if self.need_full else None
        return low, z_low, crop_t, boxes // self.patch, z_high
