"""wrcup: Weighted Reverse Convolution feature upsamplers for frozen vision foundation models.

>>> import wrcup
>>> model = wrcup.load()                   # embedded DINOv2-architecture ViT-S/14 + shipped WRC upsampler
>>> hr = model(images)                     # B×3×H×W in [0, 1] → B×384×(2H/14)×(2W/14)
>>> hr = model(images, scale="image")      # … → B×384×H×W (also scale=4, 8 or output_size=(H2, W2))
"""
__version__ = "0.1.0"


def load(name_or_path=None, device=None, backbone_weights=None, fold_bn=True, output_norm=None):
    """Load a trained upsampler with its frozen backbone; see :func:`wrcup.models.bundle.load`.

    ``name_or_path`` None: the default shipped checkpoint, :data:`wrcup.models.names.DEFAULT_CHECKPOINT` (looked up
    here rather than in the signature, so that ``import wrcup`` stays free of torch).
    """
    from .models.bundle import load as _load
    from .models.names import DEFAULT_CHECKPOINT

    name_or_path = DEFAULT_CHECKPOINT if name_or_path is None else name_or_path
    return _load(name_or_path, device=device, backbone_weights=backbone_weights, fold_bn=fold_bn,
                 output_norm=output_norm)


__all__ = ["load", "__version__"]
