"""Inference-time folding of BatchNorm into the convolution that feeds it."""
from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def _fold(parent: nn.Module, conv_name: str, bn_name: str) -> None:
    setattr(parent, conv_name, fuse_conv_bn_eval(getattr(parent, conv_name), getattr(parent, bn_name)))
    setattr(parent, bn_name, nn.Identity())


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """An eval-mode copy of ``module`` in which every BatchNorm2d directly fed by a Conv2d is folded into it.

    Pairs are found structurally: consecutive ``(Conv2d, BatchNorm2d)`` children of an ``nn.Sequential``, and
    sibling attributes ``convN``/``bnN`` (the :class:`~wrcup.models.upsampler.Bottleneck` layout, whose forward
    applies ``bnN`` right after ``convN``). Outputs are unchanged up to float rounding; the state dict of the
    copy no longer has the BatchNorm entries, so keep the original for training or saving.
    """
    folded = copy.deepcopy(module).eval()
    for parent in list(folded.modules()):
        children = dict(parent.named_children())
        if isinstance(parent, nn.Sequential):
            names = list(children)
            for a, b in zip(names, names[1:]):
                if isinstance(children[a], nn.Conv2d) and isinstance(children[b], nn.BatchNorm2d):
                    _fold(parent, a, b)
            continue
        for name, child in children.items():
            conv_name = "conv" + name[2:]
            if name.startswith("bn") and isinstance(child, nn.BatchNorm2d) and isinstance(children.get(conv_name), nn.Conv2d):
                _fold(parent, conv_name, name)
    return folded
