"""Test networks shared by the BatchNorm-folding tests (tests/models/test_fuse.py, test_fused_inference.py)."""
from __future__ import annotations

from torch import nn


def as_after_training(net: nn.Module) -> nn.Module:
    """``net`` with non-trivial BatchNorm statistics and affine parameters (drawn from the global RNG), as after
    training, so that folding them is actually tested; returns ``net``."""
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net
