"""Thin modules over :mod:`wrcup.ops`, plus the baseline operators, behind one interface."""
from .base import UpsampleOperator
from .baselines import BilinearUpsample, TransposedUpsample
from .registry import (OperatorEntry, create_operator, list_operators, operator_entry, register_operator,
                       unregister_operator)

# bilinear is the parameter-free floor: the upsampler built for it is the resize alone (guided=False)
register_operator("bilinear", summary="bilinear resize, no parameters (the floor)", guided=False)(BilinearUpsample)
register_operator("transposed", summary="transposed convolution, kernel = stride = scale (LiFT-style)")(
    TransposedUpsample)

# WRC and Converse2d register "wrc-reference", "wrc-aligned", "wrc-exact" and "converse2d" on import.
from .wrc import WRC, Converse2d

__all__ = [
    "UpsampleOperator",
    "BilinearUpsample",
    "TransposedUpsample",
    "WRC",
    "Converse2d",
    "OperatorEntry",
    "create_operator",
    "list_operators",
    "operator_entry",
    "register_operator",
    "unregister_operator",
]
