"""Thin modules over :mod:`wrcup.ops`, plus the baseline operators, behind one interface."""
from .base import UpsampleOperator
from .baselines import BilinearUpsample, TransposedUpsample
from .registry import create_operator, list_operators, register_operator

register_operator("bilinear")(BilinearUpsample)
register_operator("transposed")(TransposedUpsample)

# WRC and Converse2d register "wrc-reference", "wrc-aligned", "wrc-exact" and "converse2d" on import.
from .wrc import WRC, Converse2d

__all__ = [
    "UpsampleOperator",
    "BilinearUpsample",
    "TransposedUpsample",
    "WRC",
    "Converse2d",
    "create_operator",
    "list_operators",
    "register_operator",
]
