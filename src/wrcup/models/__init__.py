"""wrcup.models: the upsampler networks (:mod:`wrcup.models.upsampler`) and the backbone + upsampler bundle."""
from .fuse import fold_batchnorm
from .upsampler import (
    UnguidedUpsampler,
    Bottleneck,
    ImageGuidance,
    StackedUpsampler,
    WRCUpsampler,
    build_upsampler,
    upsample,
)

__all__ = [
    "UnguidedUpsampler",
    "Bottleneck",
    "ImageGuidance",
    "StackedUpsampler",
    "WRCUpsampler",
    "build_upsampler",
    "fold_batchnorm",
    "upsample",
]
