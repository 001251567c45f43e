"""Name → operator registry: the one place an upsampling operator's name, factory and properties are declared.

Every user of an operator name looks it up here: :func:`wrcup.models.build_upsampler` (and so training and
checkpoint loading), ``wrcup train --operator`` (its choices and help) and ``wrcup info``. An operator registered
by other code (``@register_operator("name")`` on a factory) can therefore be trained, saved and loaded like the
built-in ones, as long as the registering module is imported before the checkpoint is loaded.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .._registry import Registry
from .base import UpsampleOperator

__all__ = ["OperatorEntry", "create_operator", "list_operators", "operator_entry", "register_operator",
           "unregister_operator"]


@dataclass(frozen=True)
class OperatorEntry:
    """What the registry holds for one operator name.

    Attributes:
        name: the registered name (what checkpoints record and ``--operator`` takes).
        factory: ``factory(channels, scale=2, **options) -> UpsampleOperator``; its keyword options are the
            operator's own (e.g. ``safeguards`` for the WRC modes).
        summary: one line for help texts and ``wrcup info``.
        guided: True: :func:`wrcup.models.build_upsampler` builds the image-guided network around the operator.
            False: the operator alone, applied to the features, is the upsampler (the parameter-free baselines,
            which have nothing for the guidance to steer). Any operator may still be put inside the guided
            network explicitly (``WRCUpsampler(dim, p, operator=name)``).
    """

    name: str
    factory: Callable[..., UpsampleOperator]
    summary: str
    guided: bool = True


_OPERATORS: Registry[OperatorEntry] = Registry("operator", sort=True)


def register_operator(name: str, *, summary: str | None = None, guided: bool = True):
    """Decorator registering ``factory(channels, scale=2, **options) -> UpsampleOperator`` under ``name``.

    ``summary`` defaults to the first line of the factory's docstring; ``guided``: see :class:`OperatorEntry`.
    """
    def make_entry(factory) -> OperatorEntry:
        if not callable(factory):
            raise TypeError(f"register_operator({name!r}) must decorate a callable, got {type(factory).__name__}")
        text = summary if summary is not None else ((factory.__doc__ or "").strip().splitlines() or [""])[0]
        return OperatorEntry(name, factory, text.strip(), bool(guided))

    return _OPERATORS.decorator(name, make_entry)


def unregister_operator(name: str) -> OperatorEntry:
    """Remove ``name`` from the registry (e.g. a test's temporary operator); returns its entry."""
    operator_entry(name)  # the operator's own message for an unknown name
    return _OPERATORS.unregister(name)


def list_operators() -> list[str]:
    """The registered operator names, sorted."""
    return _OPERATORS.names()


def operator_entry(name: str) -> OperatorEntry:
    """The entry of ``name``; ValueError listing the registered names when there is none."""
    if name not in _OPERATORS:
        raise ValueError(f"operator must be one of the registered operators {', '.join(map(repr, list_operators()))}; "
                         f"got {name!r} (an operator defined elsewhere is registered with "
                         f"wrcup.nn.register_operator when its module is imported)")
    return _OPERATORS.get(name)


def create_operator(name: str, channels: int, scale: int = 2, **kwargs) -> UpsampleOperator:
    """Build the operator registered as ``name`` for ``channels`` channels and integer ``scale``."""
    return operator_entry(name).factory(channels, scale=scale, **kwargs)
