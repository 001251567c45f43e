"""The WRC upsampler network (the authors' architecture, Li et al. 2026): image guidance + coarse backbone features → features on a 2× grid.

Layout (C = ``dim``, G = 32 guidance channels, M = (C + G) // 2)::

    image (B×3×H×W, backbone-normalised)
      image_branch.stem      1×1 conv 3→G (no bias) + BN + ReLU                     H × W
      image_branch.quarter   4 bottlenecks G→G, strides 2,1,2,1                     ⌈H/4⌉ × ⌈W/4⌉
      → resample to 2× the token grid (rule below)                       = g1       2h × 2w
      image_branch.coarse    2 bottlenecks G→G, strides 2,1              = g2       h × w
    features (B×C×h×w)
      cat(features, g2)                                                  C+G        h × w
      feature_path.0 / .1    bottlenecks C+G → M → M                               h × w
      operator               create_operator(operator, M, scale=2)                 2h × 2w
      cat(·, g1)             M+G
      fuse                   bottleneck M+G → C/2
      head                   1×1 conv C/2 → C (with bias)                          2h × 2w

Bottleneck width: the middle (1×1 → 3×3 → 1×1) width equals the INPUT width. Of the simple rules tried
(mid = in, out, in/2, out/2, in/4, out/4) it is the only one that reproduces the reference network's size: for
C = 384 and the "wrc-reference" operator exactly 3,979,216 parameters in 204 state-dict entries (mid = out, the
LiFT-like guess, would give 2,472,912).
All blocks here have in ≥ out, so "mid = max(in, out)" is the same rule.

Resampling rule of the guidance (patch size p, token grid h×w): the quarter-resolution map is about
(p/4)·h × (p/4)·w.
- p > 8 (e.g. 14, 16; the authors' path): bilinearly resize to exactly 4h × 4w (a no-op when it already has
  that size, e.g. p = 16), then 2×2 max-pool → 2h × 2w.
- p ≤ 8: the quarter map is already (p = 8) or less than 2× the grid: bilinearly resize to exactly 2h × 2w
  (identity for p = 8).
Bilinear resizes use align_corners=False. g2 is resized to h × w only if stride rounding makes it differ.

State-dict names: ours are the attribute paths above; the authors' network names the same modules differently
(:data:`REFERENCE_MODULE_NAMES` in :mod:`wrcup.models.reference_names`; a Bottleneck's shortcut is their
``downsample``). Both name sets are accepted by ``load_state_dict`` and :meth:`WRCUpsampler.load_reference_state_dict`:
every entry is matched by its exact name through that table, never by position, so their entries load correctly in
any order.
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx.experimental.symbolic_shapes import statically_known_true

from .._checks import check_positive_int, check_tensor
from ..nn import create_operator, operator_entry
from . import fuse as _fuse
from .output_norm import check_output_norm, match_norm
from .reference_names import (REFERENCE_MODULE_NAMES, checked_reference_state, reference_key_map,
                              rename_reference_keys)

__all__ = [
    "GUIDANCE_CHANNELS",
    "REFERENCE_MODULE_NAMES",
    "Bottleneck",
    "ImageGuidance",
    "WRCUpsampler",
    "min_grid",
    "UnguidedUpsampler",
    "build_upsampler",
]

GUIDANCE_CHANNELS = 32


class Bottleneck(nn.Module):
    """1×1 conv, BN, ReLU, 3×3 conv (stride), BN, ReLU, 1×1 conv, BN, + shortcut, ReLU. Convs without bias.

    The shortcut is a strided 1×1 conv + BN when the shape changes (stride ≠ 1 or in ≠ out), else identity.
    ``mid_channels`` defaults to ``in_channels`` (the rule that matches the reference network's size).
    x: B×in×H×W → B×out×⌈H/stride⌉×⌈W/stride⌉.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, mid_channels: int | None = None):
        super().__init__()
        mid = in_channels if mid_channels is None else mid_channels
        self.conv1 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut_norm = () if self.shortcut is None else (self.shortcut[1],)
        if _fuse.fused_inference(x) and _fuse.folded(self.bn1, self.bn2, self.bn3, *shortcut_norm):
            return self._forward_fused(x)
        # In-place ReLUs and add: BN backward needs its input, not its output, so this is autograd-safe.
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        out = self.bn3(self.conv3(out))
        out += x if self.shortcut is None else self.shortcut(x)
        return F.relu(out, inplace=True)

    def _forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        """The BatchNorm-folded block through :func:`~wrcup.models.fuse.conv_fused` (see :func:`~wrcup.models.fuse.fused_inference`); channels-last out."""
        x = x.contiguous(memory_format=torch.channels_last)
        out = _fuse.conv_fused(self.conv2, _fuse.conv_fused(self.conv1, x, relu=True), relu=True)
        shortcut = x if self.shortcut is None else _fuse.conv_fused(self.shortcut[0], x, relu=False)
        return _fuse.conv_fused(self.conv3, out, relu=True, add=shortcut)


class ImageGuidance(nn.Module):
    """The image branch: B×3×H×W normalised image → g1 (B×G×2h×2w) and g2 (B×G×h×w) for a token grid h×w.

    Split in two so that several passes over the same image (:func:`~wrcup.models.stacking.upsample`) compute the quarter-resolution
    map once: :meth:`quarter_map` (image only) and :meth:`guidance` (quarter map + grid size + patch size).
    """

    def __init__(self, channels: int = GUIDANCE_CHANNELS):
        super().__init__()
        self.channels = check_positive_int(channels, "guidance_channels")
        G = channels
        self.stem = nn.Sequential(nn.Conv2d(3, G, 1, bias=False), nn.BatchNorm2d(G), nn.ReLU(inplace=True))
        self.quarter = nn.Sequential(Bottleneck(G, G, 2), Bottleneck(G, G, 1), Bottleneck(G, G, 2), Bottleneck(G, G, 1))
        self.coarse = nn.Sequential(Bottleneck(G, G, 2), Bottleneck(G, G, 1))

    def quarter_map(self, image: torch.Tensor) -> torch.Tensor:
        """image B×3×H×W → B×G×⌈H/4⌉×⌈W/4⌉ (channels-last memory layout)."""
        # Channels-last convolutions at full image resolution are markedly faster (≈1.5× for this branch on
        # CPU, measured at 448²); copying a 3-channel image costs little.
        image = image.contiguous(memory_format=torch.channels_last)
        if _fuse.fused_inference(image) and _fuse.folded(self.stem[1]):
            return self.quarter(_fuse.conv_fused(self.stem[0], image, relu=True))
        return self.quarter(self.stem(image))

    def guidance(self, quarter: torch.Tensor, grid: tuple[int, int], patch_size: float):
        """quarter B×G×Hq×Wq, token grid (h, w), (effective) patch size → (g1 B×G×2h×2w, g2 B×G×h×w)."""
        h, w = grid
        if patch_size > 8:
            g1 = _resize(quarter, (4 * h, 4 * w))
            g1 = F.max_pool2d(g1, 2)
        else:
            g1 = _resize(quarter, (2 * h, 2 * w))
        g2 = _resize(self.coarse(g1), (h, w))
        return g1, g2

    def forward(self, image: torch.Tensor, grid: tuple[int, int], patch_size: float):
        return self.guidance(self.quarter_map(image), grid, patch_size)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (align_corners=False), skipped when ``x`` already has ``size``."""
    # statically_known_true: with traced (symbolic) sizes, skip only what holds for every size, instead of adding
    # a guard on the traced one (resizing to the same size is the identity anyway)
    if all(statically_known_true(a == b) for a, b in zip(x.shape[-2:], size)):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _upsample2x(features: torch.Tensor) -> torch.Tensor:
    return F.interpolate(features, scale_factor=2, mode="bilinear", align_corners=False)


def parameter_dtype(module: nn.Module, default: torch.dtype) -> torch.dtype:
    """The dtype of ``module``'s first floating parameter (``default`` if it has none): the compute dtype."""
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return default


def min_grid(operator: nn.Module) -> int:
    """Smallest token-grid side an operator accepts: circular padding of P cells needs P cells to wrap around
    (P ≤ side), reflect padding one more (P < side); other paddings (or none) work from one cell."""
    padding, mode = int(getattr(operator, "padding", 0)), getattr(operator, "padding_mode", "zeros")
    return {"circular": max(1, padding), "reflect": padding + 1}.get(mode, 1)


def _check_inputs(image: torch.Tensor, features: torch.Tensor, dim: int, patch_size: float,
                  min_side: int = 1) -> None:
    """Shapes: image B×3×H×W, features B×dim×h×w with H = p·h and W = p·w (rounded, p may be fractional), and
    h, w ≥ ``min_side`` (the operator's :func:`min_grid`)."""
    check_tensor(image, "image", 4)
    check_tensor(features, "features", 4)
    if image.shape[1] != 3:
        raise ValueError(f"image must have 3 channels (a backbone-normalised RGB image), got shape {tuple(image.shape)}")
    if features.shape[1] != dim:
        raise ValueError(f"features must have dim={dim} channels, got shape {tuple(features.shape)}")
    if image.shape[0] != features.shape[0]:
        raise ValueError(f"image and features must have the same batch size, got image {tuple(image.shape)} "
                         f"and features {tuple(features.shape)}")
    if image.device != features.device:
        raise ValueError(f"image and features must be on the same device, got {image.device} and {features.device}")
    H, W = image.shape[-2:]
    h, w = features.shape[-2:]
    if h < 1 or w < 1 or round(patch_size * h) != H or round(patch_size * w) != W:
        raise ValueError(
            f"features grid {h}×{w} does not match image size {H}×{W} for patch size {patch_size:g}: expected "
            f"image {round(patch_size * h)}×{round(patch_size * w)} (resize the image to a multiple of the patch size "
            f"before running the backbone)")
    if h < min_side or w < min_side:
        raise ValueError(f"features grid {h}×{w} is too small: this upsampler's operator needs at least {min_side} "
                         f"tokens per side (images of at least {min_side} patches on each side)")


class WRCUpsampler(nn.Module):
    """One 2× pass: ``forward(image, features)`` → B×dim×2h×2w (see the module docstring for the layout).

    Args:
        dim: C, the backbone's feature channels (even).
        patch_size: p, the backbone's patch size (image H×W ↔ token grid H/p × W/p).
        operator: the upsampling operator at the heart of the feature path, any name registered in
            :mod:`wrcup.nn` (:func:`wrcup.nn.list_operators`), also one registered with ``guided=False``.
        residual: add the bilinear 2× upsampling of the input features to the output (no extra parameters).
        guidance_channels: G, channels of the image branch.
        operator_kwargs: passed to :func:`wrcup.nn.create_operator` (e.g. ``safeguards=True`` for WRC).
        output_norm: "learned" (the output as the network makes it) or "bilinear" (each output pixel rescaled to
            the norm of the bilinear 2× upsampling of the input features: :mod:`wrcup.models.output_norm`). Not
            a parameter: it may be changed at any time, e.g. on a loaded model.
    """

    def __init__(self, dim: int, patch_size: int, operator: str = "wrc-reference", residual: bool = False,
                 guidance_channels: int = GUIDANCE_CHANNELS, operator_kwargs: Mapping | None = None,
                 output_norm: str = "learned"):
        super().__init__()
        check_positive_int(dim, "dim", minimum=2)
        if dim % 2:
            raise ValueError(f"dim must be even (the fuse block outputs dim/2 channels), got {dim}")
        self.dim = dim
        self.patch_size = check_positive_int(patch_size, "patch_size")
        self.operator_name = operator_entry(operator).name
        self.residual = bool(residual)
        self.output_norm = check_output_norm(output_norm)
        G = check_positive_int(guidance_channels, "guidance_channels")
        mid = (dim + G) // 2
        self.image_branch = ImageGuidance(G)
        self.feature_path = nn.Sequential(Bottleneck(dim + G, mid), Bottleneck(mid, mid))
        self.operator = create_operator(operator, mid, scale=2, **dict(operator_kwargs or {}))
        self.fuse = Bottleneck(mid + G, dim // 2)
        self.head = nn.Conv2d(dim // 2, dim, 1, bias=True)
        self.register_load_state_dict_pre_hook(rename_reference_keys)

    def forward(self, image: torch.Tensor, features: torch.Tensor, patch_size: float | None = None) -> torch.Tensor:
        """image B×3×H×W (backbone-normalised), features B×dim×h×w → B×dim×2h×2w, dtype of the features.

        Any floating dtype is accepted: the inputs are cast to the parameters' dtype (float32 unless the module
        was converted) and the result back to the features' dtype. Shapes are checked; values are not (no
        host-device synchronisation), so the module traces whole under torch.compile(fullgraph=True) and export.
        ``patch_size`` overrides the effective patch size H/h (the second pass of :func:`~wrcup.models.stacking.upsample` uses p/2).
        """
        patch = self.patch_size if patch_size is None else float(patch_size)
        _check_inputs(image, features, self.dim, patch, self.min_grid)
        dtype = parameter_dtype(self, features.dtype)
        out = self.upsample_features(features.to(dtype), self.image_branch.quarter_map(image.to(dtype)), patch)
        return out.to(features.dtype)

    def upsample_features(self, features: torch.Tensor, quarter: torch.Tensor, patch_size: float) -> torch.Tensor:
        """The feature path given the image branch's quarter map (unchecked; see :meth:`forward`), then the
        ``output_norm``."""
        g1, g2 = self.image_branch.guidance(quarter, tuple(features.shape[-2:]), patch_size)
        out = self.guided(features, g1, g2)
        return match_norm(out, _upsample2x(features)) if self.output_norm == "bilinear" else out

    def guided(self, features: torch.Tensor, g1: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
        """The feature path given its guidance: features B×dim×h×w, g1 B×G×2h×2w, g2 B×G×h×w → B×dim×2h×2w."""
        x = self.feature_path(torch.cat([features, g2.to(features.dtype)], dim=1))
        x = self.operator(x.contiguous())  # the fused inference blocks return channels-last maps
        x = self.fuse(torch.cat([x, g1.to(x.dtype)], dim=1))
        if _fuse.fused_inference(x):  # head and residual add in one call (fused_inference); the usual layout returned
            cl = torch.channels_last
            res = _upsample2x(features.contiguous(memory_format=cl)) if self.residual else None
            return _fuse.conv_fused(self.head, x.contiguous(memory_format=cl), relu=False, add=res).contiguous()
        x = self.head(x)
        if self.residual:
            x = x + _upsample2x(features)
        return x

    @property
    def min_grid(self) -> int:
        """Smallest token-grid side (h and w) :meth:`forward` accepts (:func:`min_grid` of the operator)."""
        return min_grid(self.operator)

    def extra_repr(self) -> str:
        # the default output_norm is left out, so that the repr (part of evaluation cache keys) keeps its old form
        norm = "" if self.output_norm == "learned" else f", output_norm={self.output_norm!r}"
        return (f"dim={self.dim}, patch_size={self.patch_size}, operator={self.operator_name!r}, "
                f"residual={self.residual}{norm}")

    def reference_key_map(self) -> dict[str, str]:
        """Our state-dict name → the authors' name, for every entry, in the authors' order
        (:func:`wrcup.models.reference_names.reference_key_map`)."""
        return reference_key_map(self)

    def reference_state_dict(self) -> dict[str, torch.Tensor]:
        """``state_dict()`` under the authors' names, in their order (e.g. to use a network trained here there)."""
        state = self.state_dict()
        return {theirs: state[ours] for ours, theirs in self.reference_key_map().items()}

    def load_reference_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True):
        """Load a state dict named either like ours or like the authors' network, checked entry by entry.

        Every key is looked up by its exact name (ours, or the authors' through :meth:`reference_key_map`); the
        order of the entries does not matter. Raises ValueError naming the first unknown key, the first missing
        key (``strict``), a key given under both names, or a key whose shape differs (with both shapes).
        Returns ``load_state_dict``'s result.
        """
        return self.load_state_dict(checked_reference_state(self, state_dict, strict), strict=strict)


class UnguidedUpsampler(nn.Module):
    """A registered operator applied to the features alone, no image guidance: the upsampler
    :func:`build_upsampler` makes for operators registered with ``guided=False`` (the parameter-free floor
    "bilinear": bilinear 2× of the features, align_corners=False, no state). The image is only checked."""

    def __init__(self, dim: int, patch_size: int, operator: str = "bilinear", operator_kwargs: Mapping | None = None):
        super().__init__()
        self.dim = check_positive_int(dim, "dim")
        self.patch_size = check_positive_int(patch_size, "patch_size")
        self.operator_name = operator
        self.residual = False
        self.operator = create_operator(operator, dim, scale=2, **dict(operator_kwargs or {}))

    def forward(self, image: torch.Tensor, features: torch.Tensor, patch_size: float | None = None) -> torch.Tensor:
        """image B×3×H×W, features B×dim×h×w → B×dim×2h×2w."""
        patch = self.patch_size if patch_size is None else float(patch_size)
        _check_inputs(image, features, self.dim, patch, self.min_grid)
        return self.operator(features)

    min_grid = WRCUpsampler.min_grid

    def upsample_features(self, features: torch.Tensor, quarter, patch_size: float) -> torch.Tensor:
        return self.operator(features)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, patch_size={self.patch_size}, operator={self.operator_name!r}"


def build_upsampler(operator: str, dim: int, patch_size: int, residual: bool = False, output_norm: str = "learned",
                    **operator_kwargs) -> nn.Module:
    """The 2× upsampler for the registered ``operator`` (:func:`wrcup.nn.list_operators`): a
    :class:`WRCUpsampler` around it, or, for an operator registered with ``guided=False`` (e.g. "bilinear"), an
    :class:`UnguidedUpsampler`. ``operator_kwargs`` go to the operator (e.g. ``safeguards=True`` for the WRC modes).
    """
    if not operator_entry(operator).guided:
        for name, value, default in (("residual", residual, False), ("output_norm", output_norm, "learned")):
            if value != default:
                raise ValueError(f"{name}={value!r} has no meaning for the unguided {operator!r} upsampler (the "
                                 f"operator alone upsamples the features)")
        return UnguidedUpsampler(dim, patch_size, operator, operator_kwargs)
    return WRCUpsampler(dim, patch_size, operator=operator, residual=residual, operator_kwargs=operator_kwargs,
                        output_norm=output_norm)
