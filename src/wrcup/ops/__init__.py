"""wrcup.ops — functional reverse-convolution operators (overview: docs/DESIGN.md).

* :func:`reverse_conv` — Converse2D closed form on a padded periodic map.
* :func:`wrc_closed_form` — the WRC authors' closed form with given weight maps ("reference" / "aligned").
* :func:`weighted_reverse_conv` — the whole WRC layer (pad → weights → solve → crop).
* :func:`converse2d` — the whole Converse2D layer.
* :func:`wrc_exact_solve` — the exact minimiser of the weighted objective (``wrcup.ops.exact``).
* :func:`guided_upsample` — not a reverse convolution: the image-guided last step from a feature grid to pixel
  resolution (``wrcup.ops.guided``).
"""
from .closed_form import reverse_conv, wrc_closed_form
from .exact import wrc_exact_solve
from .guided import guided_upsample
from .layer import converse2d, weighted_reverse_conv

__all__ = ["reverse_conv", "wrc_closed_form", "weighted_reverse_conv", "converse2d", "wrc_exact_solve", "guided_upsample"]

