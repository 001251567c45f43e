"""The shipped checkpoints' names, declared once: every default, help text and entry point imports them."""

#: What ``wrcup.load()``, the CLI's ``--model`` options and the torch.hub entry point use when no model is named:
#: the embedded DINOv2-architecture ViT-S/14 with the shipped WRC upsampler.
DEFAULT_CHECKPOINT = "wrc-dinov2-s14-imgfocus"

#: Checkpoints shipped inside the package: name → file in ``wrcup/checkpoints/``.
SHIPPED_CHECKPOINTS = {DEFAULT_CHECKPOINT: f"{DEFAULT_CHECKPOINT}.safetensors"}

__all__ = ["DEFAULT_CHECKPOINT", "SHIPPED_CHECKPOINTS"]
