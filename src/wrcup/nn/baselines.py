"""Baseline upsampling operators the paper compares WRC against."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_channels, check_positive_int, check_tensor
from .base import UpsampleOperator


class BilinearUpsample(UpsampleOperator):
    """Parameter-free bilinear upsampling by ``scale`` (align_corners=False), the floor."""

    def __init__(self, channels: int, scale: int = 2):
        super().__init__()
        self.channels = check_positive_int(channels, "channels")
        self.scale = check_positive_int(scale, "scale")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B×C×h×w float → B×C×(s·h)×(s·w), same dtype."""
        check_tensor(x, "x", 4)
        check_channels(x, "x", self.channels)
        if self.scale == 1:
            return x
        return F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)


class TransposedUpsample(UpsampleOperator):
    """LiFT-style learned upsampling: a transposed convolution with kernel = stride = ``scale``."""

    def __init__(self, channels: int, scale: int = 2):
        super().__init__()
        self.channels = check_positive_int(channels, "channels")
        self.scale = check_positive_int(scale, "scale")
        self.deconv = nn.ConvTranspose2d(channels, channels, kernel_size=scale, stride=scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B×C×h×w float → B×C×(s·h)×(s·w), same dtype."""
        check_tensor(x, "x", 4)
        check_channels(x, "x", self.channels)
        return self.deconv(x)
