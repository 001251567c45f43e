"""Features for evaluation: one model, one method, an optional on-disk cache of backbone features.

Methods:
    ``none``      the backbone's own grid (h×w);
    ``bilinear``  the backbone features upsampled 2× bilinearly (align_corners=False);
    ``learned``   the model's trained upsampler (2× grid).

The backbone's features of an image are the expensive part and are the same for every method, so the cache
stores those (float16, keyed by backbone name and weights, input size and image bytes); methods are applied
on top.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F

from .._checks import check_choice
from .._io import atomic_path, file_sha256
from ..data.prep import prepare_images

METHODS = ("none", "bilinear", "learned")


def load_model(name_or_path: str, method: str, device=None, backbone_weights=None):
    """→ (backbone, upsampler or None, description). ``name_or_path`` is a checkpoint (name or file) or,
    for methods ``none``/``bilinear``, also a backbone name."""
    from .. import backbones
    from ..models.bundle import SHIPPED_CHECKPOINTS, load

    check_choice(method, "method", METHODS)
    is_checkpoint = str(name_or_path) in SHIPPED_CHECKPOINTS or str(name_or_path).endswith(".safetensors")
    if is_checkpoint:
        bundle = load(name_or_path, device=device, backbone_weights=backbone_weights)
        return bundle.backbone, (bundle.upsampler if method == "learned" else None), dict(bundle.metadata)
    if method == "learned":
        raise ValueError(f"--method learned needs a checkpoint for --model, got backbone name {name_or_path!r}")
    backbone = backbones.load(name_or_path, weights=backbone_weights, device=device)
    return backbone, None, {"backbone": name_or_path}


class FeatureExtractor:
    """``extractor(images)`` → features for a batch of images B×3×H×W in [0, 1] (sizes multiple of the patch)."""

    def __init__(self, backbone, upsampler, method: str, cache_dir: str | Path | None = None):
        self.backbone, self.upsampler = backbone, upsampler
        self.method = check_choice(method, "method", METHODS)
        if method == "learned" and upsampler is None:
            raise ValueError("method 'learned' needs a trained upsampler")
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.scale = 1 if method == "none" else 2

    @property
    def device(self):
        return next(self.backbone.parameters()).device

    def cache_file(self, key: str | None, size: tuple[int, int], kind: str = "features") -> Path | None:
        """Cache entry for one image's backbone output of type ``kind`` at input ``size`` (None without a cache
        or a key): keyed by the backbone's name and weights, so other weights never read these entries."""
        if self.cache_dir is None or key is None:
            return None
        tag = f"{kind}|{self.backbone.name}|{self.backbone.weights_identity()}|{tuple(size)}|{key}"
        return self.cache_dir / (hashlib.sha1(tag.encode()).hexdigest()[:24] + ".safetensors")

    def low_res(self, images: torch.Tensor, keys: list[str] | None = None) -> torch.Tensor:
        """Backbone features B×C×h×w, from the cache when ``keys`` (one per image) are given and cached."""
        if self.cache_dir is None or keys is None:
            return self.backbone(images.to(self.device))
        from safetensors.torch import save_file

        from .._io import read_cache_entry

        files = [self.cache_file(k, images.shape[-2:]) for k in keys]
        entries = [read_cache_entry(f, ("features",)) for f in files]
        if all(e is not None for e in entries):
            return torch.stack([e["features"] for e in entries]).float().to(self.device)
        feats = self.backbone(images.to(self.device))
        for f, x in zip(files, feats):
            with atomic_path(f) as tmp:
                save_file({"features": x.half().cpu().contiguous()}, str(tmp))
        # return what a later run will read from the cache, so cached and fresh runs agree exactly
        return feats.half().float()

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor, keys: list[str] | None = None) -> torch.Tensor:
        low = self.low_res(images, keys).float()
        if self.method == "none":
            return low
        if self.method == "bilinear":
            return F.interpolate(low, scale_factor=2, mode="bilinear", align_corners=False)
        return self.upsampler(self.backbone.normalise(images.to(low.device)), low)


def file_key(path: str | Path) -> str:
    """Identity of an image file for caching: the sha256 of its bytes (a copied dataset keeps its cache)."""
    return file_sha256(path)


def resize_to_grid(image: torch.Tensor, short_side: int, patch: int) -> torch.Tensor:
    """3×H×W in [0, 1] → 3×H'×W' in [0, 1]: shorter side ≈ ``short_side``, both sides multiples of ``patch``, one
    antialiased bilinear resize (:func:`wrcup.data.prep.prepare_images`, which states the rounding rule)."""
    return prepare_images(image, patch, short_side).clamp(0, 1)
