"""Thin modules over :mod:`wrcup.ops`, plus the baseline operators, behind one interface."""
from .base import UpsampleOperator
from .baselines import BilinearUpsample, TransposedUpsample
from .registry import create_operator, list_operators, register_operator

register_operator("bilinear")(BilinearUpsample)
register_operator("transposed")(TransposedUpsample)

# WRC and Converse2d register "wrc-reference", "wrc-aligned", "wrc-exact" and "converse2d"
# in wrcup/nn/wrc.py (imported below once it exists).
try:  # pragma: no cover - removed once wrc.py lands
    from .wrc import WRC, Converse2d  # noqa: F401
except ImportError:
    pass

__all__ = [
    "UpsampleOperator",
    "BilinearUpsample",
    "TransposedUpsample",
    "create_operator",
    "list_operators",
    "register_operator",
]
