"""Name → operator registry, so networks can swap the upsampling operator by name."""
from __future__ import annotations

from typing import Callable

from .._checks import check_choice
from .base import UpsampleOperator

_FACTORIES: dict[str, Callable[..., UpsampleOperator]] = {}


def register_operator(name: str):
    """Decorator registering ``factory(channels, scale=2, **kwargs) -> UpsampleOperator`` under ``name``."""

    def wrap(factory):
        if name in _FACTORIES:
            raise ValueError(f"operator {name!r} is already registered")
        _FACTORIES[name] = factory
        return factory

    return wrap


def list_operators() -> list[str]:
    return sorted(_FACTORIES)


def create_operator(name: str, channels: int, scale: int = 2, **kwargs) -> UpsampleOperator:
    """Build the operator registered as ``name`` for ``channels`` channels and integer ``scale``."""
    check_choice(name, "operator", list_operators())
    return _FACTORIES[name](channels, scale=scale, **kwargs)
