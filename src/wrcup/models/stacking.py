"""Several 2× passes of the upsampler in a row (the stacking the paper and LiFT use for 4× and 8×)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .upsampler import UnguidedUpsampler, WRCUpsampler, _check_inputs, parameter_dtype

__all__ = ["StackedUpsampler", "upsample"]


def upsample(image: torch.Tensor, features: torch.Tensor, passes: Sequence[nn.Module]) -> torch.Tensor:
    """Apply 2× upsamplers one after the other: features B×C×h×w → B×C×(2^n·h)×(2^n·w) for n passes.

    Pass i sees the same image and the features on the grid 2^i·h × 2^i·w, i.e. it runs with the effective
    patch size p / 2^i: its guidance g1/g2 come out at 2×/1× the CURRENT grid (e.g. p = 14: the second pass
    resizes the ≈3.5h quarter map bilinearly to 4h instead of pooling; see the module docstring's rule).
    The same module may appear several times (weight sharing). The image branch's quarter-resolution map
    depends on the image only, so it is computed once per distinct image branch.

    Args:
        image: B×3×H×W backbone-normalised image, H = p·h, W = p·w.
        features: B×C×h×w backbone features.
        passes: WRCUpsampler / UnguidedUpsampler modules with the same dim and patch size.
    """
    if len(passes) == 0:
        raise ValueError("passes must contain at least one upsampler")
    first = passes[0]
    for i, p in enumerate(passes):
        if not isinstance(p, (WRCUpsampler, UnguidedUpsampler)):
            raise TypeError(f"passes[{i}] must be a WRCUpsampler or UnguidedUpsampler, got {type(p).__name__}")
        if (p.dim, p.patch_size) != (first.dim, first.patch_size):
            raise ValueError(f"passes[{i}] has dim={p.dim}, patch_size={p.patch_size}; passes[0] has "
                             f"dim={first.dim}, patch_size={first.patch_size}")
    _check_inputs(image, features, first.dim, first.patch_size, first.min_grid)
    out_dtype = features.dtype
    dtype = parameter_dtype(nn.ModuleList(passes), out_dtype)
    image, features = image.to(dtype), features.to(dtype)
    quarters: dict[int, torch.Tensor] = {}
    x = features
    for i, p in enumerate(passes):
        quarter = None
        if isinstance(p, WRCUpsampler):
            key = id(p.image_branch)
            if key not in quarters:
                quarters[key] = p.image_branch.quarter_map(image)
            quarter = quarters[key]
        x = p.upsample_features(x, quarter, first.patch_size / 2**i)
    return x.to(out_dtype)


class StackedUpsampler(nn.Module):
    """Several 2× passes as one module (``passes=[up, up]`` shares weights; two modules give separate ones).

    ``forward(image, features)`` → B×C×(2^n·h)×(2^n·w); see :func:`upsample` for how each pass is guided.
    """

    def __init__(self, passes: Sequence[nn.Module]):
        super().__init__()
        if len(passes) == 0:
            raise ValueError("passes must contain at least one upsampler")
        self.passes = nn.ModuleList(passes)
        self.dim = passes[0].dim
        self.patch_size = passes[0].patch_size

    @property
    def scale(self) -> int:
        return 2 ** len(self.passes)

    def forward(self, image: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return upsample(image, features, list(self.passes))
