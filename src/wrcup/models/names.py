"""The shipped checkpoints' names, declared once: every default, help text and entry point imports them."""

#: What ``wrcup.load()``, the CLI's ``--model`` options and the torch.hub entry point use when no model is named:
#: the embedded DINOv2-architecture ViT-S/14 with the shipped WRC upsampler (docs/RESULTS.md, "The shipped
#: checkpoints").
DEFAULT_CHECKPOINT = "wrc-dinov2-s14-imgfocus-v2"

#: The first shipped checkpoint (the authors' closed form, 1,400 steps at one grid scale): still loads by name,
#: so that results computed with it can be reproduced.
FIRST_CHECKPOINT = "wrc-dinov2-s14-imgfocus"

#: Checkpoints shipped inside the package: name → file in ``wrcup/checkpoints/``.
SHIPPED_CHECKPOINTS = {name: f"{name}.safetensors" for name in (DEFAULT_CHECKPOINT, FIRST_CHECKPOINT)}

__all__ = ["DEFAULT_CHECKPOINT", "FIRST_CHECKPOINT", "SHIPPED_CHECKPOINTS"]
