"""Features for evaluation: one model, one method, an optional on-disk cache of backbone features.

Methods:
    ``none``                the backbone's own grid (h×w);
    ``bilinear``            the backbone features upsampled 2× bilinearly (align_corners=False);
    ``learned``             the model's trained upsampler (2× grid);
    ``bilinear-4x``         the backbone features upsampled 4× bilinearly, one resize (align_corners=False);
    ``learned-4x``          two passes of the trained upsampler, each guided by the image: what
                            ``model(images, scale=4)`` gives (:func:`wrcup.models.bundle.upsample_to_size`);
    ``learned-bilinear-4x`` one pass of the trained upsampler, then 2× bilinear (align_corners=False);
    ``learned-bilinear-norm`` and ``learned-bilinear-norm-4x``: ``learned`` and ``learned-4x`` with the upsampler's
                            ``output_norm="bilinear"`` (each pass: its directions, the bilinear upsampling's
                            lengths; :mod:`wrcup.models.output_norm`).

The backbone's features of an image are the expensive part and are the same for every method, so the cache
stores those (float16, keyed by backbone name and weights, input size and image bytes); methods are applied
on top.
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .._cache import cache_key, read_entry, write_entry
from .._io import file_sha256
from .._registry import Registry
from ..data.prep import prepare_images
from ..models.output_norm import with_output_norm



@dataclass(frozen=True)
class Method:
    """A way to get features from the backbone's: ``apply(extractor, images B×3×H×W, low B×C×h×w)`` → features on
    a grid ``scale`` times the backbone's."""

    name: str
    scale: int
    help: str
    apply: Callable
    uses_upsampler: bool = False


_METHODS: Registry[Method] = Registry("method")


def register_method(name: str, scale: int, help: str, *, uses_upsampler: bool = False):
    """Decorator registering ``apply`` as method ``name``; ``uses_upsampler``: it runs the checkpoint's trained
    upsampler (see :func:`uses_upsampler`)."""
    return _METHODS.decorator(name, lambda apply: Method(name, scale, help, apply, bool(uses_upsampler)))


def list_methods() -> list[str]:
    """The method names, in registration order."""
    return _METHODS.names()


def get_method(name: str) -> Method:
    return _METHODS.get(name)


def uses_upsampler(method: str) -> bool:
    """Whether ``method`` runs the checkpoint's trained upsampler: then :func:`load_model` returns it,
    :class:`FeatureExtractor` requires it, and results depend on the checkpoint, not only on the backbone."""
    return get_method(method).uses_upsampler


@register_method("none", 1, "the backbone's own grid")
def _none(extractor, images, low):
    return low


@register_method("bilinear", 2, "the backbone's features upsampled 2× bilinearly")
def _bilinear(extractor, images, low):
    return F.interpolate(low, scale_factor=2, mode="bilinear", align_corners=False)


def _one_pass(upsampler, extractor, images, low):
    """One pass of ``upsampler`` (the checkpoint's, or a view of it with another output norm)."""
    return upsampler(extractor.backbone.normalise(images.to(low.device)), low)


def _two_passes(upsampler, extractor, images, low):
    """The path model(images, scale=4) takes: the passes of wrcup.models.upsample (quarter map computed once)."""
    from ..models.bundle import upsample_to_size

    image = extractor.backbone.normalise(images.to(low.device))
    return upsample_to_size(upsampler, image, low, (4 * low.shape[-2], 4 * low.shape[-1]))


@register_method("learned", 2, "the checkpoint's trained upsampler (2× grid)", uses_upsampler=True)
def _learned(extractor, images, low):
    return _one_pass(extractor.upsampler, extractor, images, low)


@register_method("bilinear-4x", 4, "the backbone's features upsampled 4× bilinearly (one resize)")
def _bilinear_4x(extractor, images, low):
    return F.interpolate(low, scale_factor=4, mode="bilinear", align_corners=False)


@register_method("learned-4x", 4, "two passes of the checkpoint's upsampler, each guided by the image "
                 "(model(images, scale=4))", uses_upsampler=True)
def _learned_4x(extractor, images, low):
    return _two_passes(extractor.upsampler, extractor, images, low)


@register_method("learned-bilinear-4x", 4, "one pass of the checkpoint's upsampler, then 2× bilinear",
                 uses_upsampler=True)
def _learned_bilinear_4x(extractor, images, low):
    return F.interpolate(_learned(extractor, images, low), scale_factor=2, mode="bilinear", align_corners=False)


@register_method("learned-bilinear-norm", 2, "the checkpoint's upsampler with output_norm='bilinear': its "
                 "directions, the bilinear upsampling's lengths", uses_upsampler=True)
def _learned_bilinear_norm(extractor, images, low):
    return _one_pass(with_output_norm(extractor.upsampler, "bilinear"), extractor, images, low)


@register_method("learned-bilinear-norm-4x", 4, "learned-4x with output_norm='bilinear' in each pass",
                 uses_upsampler=True)
def _learned_bilinear_norm_4x(extractor, images, low):
    return _two_passes(with_output_norm(extractor.upsampler, "bilinear"), extractor, images, low)


METHODS = tuple(list_methods())


def load_model(name_or_path: str, method: str, device=None, backbone_weights=None):
    """→ (backbone, upsampler or None, description). ``name_or_path`` is a checkpoint (name or file) or, for
    methods that do not run the upsampler (``none``, ``bilinear``, ``bilinear-4x``), also a backbone name."""
    from .. import backbones
    from ..models.bundle import SHIPPED_CHECKPOINTS, load

    get_method(method)
    is_checkpoint = str(name_or_path) in SHIPPED_CHECKPOINTS or str(name_or_path).endswith(".safetensors")
    if is_checkpoint:
        bundle = load(name_or_path, device=device, backbone_weights=backbone_weights)
        return bundle.backbone, (bundle.upsampler if uses_upsampler(method) else None), dict(bundle.metadata)
    if uses_upsampler(method):
        raise ValueError(f"--method {method} needs a checkpoint for --model, got backbone name {name_or_path!r}")
    backbone = backbones.load(name_or_path, weights=backbone_weights, device=device)
    return backbone, None, {"backbone": name_or_path}


class FeatureExtractor:
    """``extractor(images)`` → features for a batch of images B×3×H×W in [0, 1] (sizes multiple of the patch)."""

    def __init__(self, backbone, upsampler, method: str, cache_dir: str | Path | None = None):
        self.backbone, self.upsampler = backbone, upsampler
        self.method = get_method(method).name
        if uses_upsampler(method) and upsampler is None:
            raise ValueError(f"method {method!r} needs a trained upsampler")
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.scale = get_method(method).scale

    @functools.cached_property
    def identity(self) -> dict:
        """What this extractor's features depend on, for result cache keys: the method, the backbone's name and
        weights (:meth:`weights_identity`) and, for a method that runs the upsampler, ``sha256:…`` of the
        upsampler's structure (its repr, which names the operator) and every state entry's name, dtype, shape and
        bytes; a copied or renamed checkpoint keeps its identity, other weights or another operator change it.
        Computed once per extractor (the upsampler is not trained while it evaluates)."""
        identity = {"method": self.method, "backbone": self.backbone.name,
                    "weights": self.backbone.weights_identity(), "upsampler": None}
        if uses_upsampler(self.method):
            digest = hashlib.sha256(repr(self.upsampler).encode())
            for name, tensor in self.upsampler.state_dict().items():
                flat = tensor.detach().to("cpu").contiguous().reshape(-1)
                digest.update(f"|{name}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
                digest.update(flat.view(torch.uint8).numpy().tobytes())
            identity["upsampler"] = "sha256:" + digest.hexdigest()
        return identity

    @property
    def device(self):
        return next(self.backbone.parameters()).device

    def cache_file(self, key: str | None, size: tuple[int, int], kind: str = "features") -> Path | None:
        """Cache entry for one image's backbone output of type ``kind`` at input ``size`` (None without a cache
        or a key): keyed by the backbone's name and weights, so other weights never read these entries."""
        if self.cache_dir is None or key is None:
            return None
        name = cache_key({"kind": kind, "backbone": self.backbone.name, "weights": self.backbone.weights_identity(),
                          "size": tuple(size), "image": key}, length=24)
        return self.cache_dir / (name + ".safetensors")

    def low_res(self, images: torch.Tensor, keys: list[str] | None = None) -> torch.Tensor:
        """Backbone features B×C×h×w, from the cache when ``keys`` (one per image) are given and cached."""
        if self.cache_dir is None or keys is None:
            return self.backbone(images.to(self.device))
        files = [self.cache_file(k, images.shape[-2:]) for k in keys]
        entries = [read_entry(f, ("features",)) for f in files]
        if all(e is not None for e in entries):
            return torch.stack([e["features"] for e in entries]).float().to(self.device)
        feats = self.backbone(images.to(self.device))
        for f, x in zip(files, feats):
            write_entry(f, {"features": x.half()})
        # return what a later run will read from the cache, so cached and fresh runs agree exactly
        return feats.half().float()

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor, keys: list[str] | None = None) -> torch.Tensor:
        return self.upsample(images, self.low_res(images, keys).float())

    @torch.inference_mode()
    def upsample(self, images: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        """Apply the method to any B×C×h×w map of ``images`` (the features, or e.g. the keys) → B×C×(s·h)×(s·w),
        s = ``self.scale``: ``none`` returns it, ``bilinear`` doubles it bilinearly, ``learned`` runs the
        model's upsampler on it (the 4× methods: see the module docstring)."""
        return get_method(self.method).apply(self, images, low)


def file_key(path: str | Path) -> str:
    """Identity of an image file for caching: the sha256 of its bytes (a copied dataset keeps its cache)."""
    return file_sha256(path)


def resize_to_grid(image: torch.Tensor, short_side: int, patch: int) -> torch.Tensor:
    """3×H×W in [0, 1] → 3×H'×W' in [0, 1]: shorter side ≈ ``short_side``, both sides multiples of ``patch``, one
    antialiased bilinear resize (:func:`wrcup.data.prep.prepare_images`, which states the rounding rule)."""
    return prepare_images(image, patch, short_side).clamp(0, 1)
