"""wrcup.models: the upsampler networks (:mod:`wrcup.models.upsampler`, stacked: :mod:`wrcup.models.stacking`) and the
backbone + upsampler bundle."""
from .fuse import fold_batchnorm
from .output_norm import OUTPUT_NORMS, match_norm
from .stacking import StackedUpsampler, upsample
from .upsampler import UnguidedUpsampler, Bottleneck, ImageGuidance, WRCUpsampler, build_upsampler

__all__ = [
    "OUTPUT_NORMS",
    "UnguidedUpsampler",
    "Bottleneck",
    "ImageGuidance",
    "StackedUpsampler",
    "WRCUpsampler",
    "build_upsampler",
    "fold_batchnorm",
    "match_norm",
    "upsample",
]
