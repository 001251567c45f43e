"""The one small interface every upsampling operator implements."""
from __future__ import annotations

import torch
from torch import nn


class UpsampleOperator(nn.Module):
    """A module mapping B×C×h×w features to B×C×(s·h)×(s·w) features.

    Attributes:
        channels: C, the number of channels in and out (depthwise operators keep it).
        scale: s, the integer upsampling factor.
    """

    channels: int
    scale: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError
