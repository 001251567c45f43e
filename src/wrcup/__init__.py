"""wrcup: Weighted Reverse Convolution feature upsamplers for frozen vision foundation models."""
__version__ = "0.1.0"
