"""A name → entry registry: the one copy of the logic every wrcup registry shares (operators, backbones, evaluation
tasks and methods, dataset readers).

A name is a non-empty string without surrounding spaces or commas (names are joined with commas in help texts and
error messages, and ``wrcup eval compare --tasks/--methods`` take comma-separated lists). Registering a name twice
is an error rather than a silent replacement; an unknown name is a ValueError that lists the registered ones.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Callable, Generic, Iterator, Mapping, TypeVar

from ._checks import check_choice

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries by name, listed in registration order, or sorted with ``sort=True``.

    Args:
        kind: what a name names (``"operator"``); starts the error messages and is the argument name in them.
        sort: list the names sorted instead of in registration order.
        scope: appended to the "already registered" message when one kind has several registries
            (``"for 'segmentation'"``).
    """

    def __init__(self, kind: str, *, sort: bool = False, scope: str = ""):
        self.kind, self.sort, self.scope = kind, bool(sort), scope
        self._entries: dict[str, T] = {}

    def check_name(self, name) -> str:
        """``name`` if it may be registered; ValueError otherwise."""
        if not isinstance(name, str) or not name.strip() or name != name.strip() or "," in name:
            raise ValueError(f"{self.kind} name must be a non-empty string without surrounding spaces or commas, "
                             f"got {name!r}")
        return name

    def register(self, name: str, entry: T) -> T:
        """Add ``entry`` under ``name`` and return it; ValueError when the name is taken or malformed."""
        self.check_name(name)
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered" + (f" {self.scope}" if self.scope else ""))
        self._entries[name] = entry
        return entry

    def decorator(self, name: str, make_entry: Callable[[Callable], T]) -> Callable[[Callable], Callable]:
        """A decorator registering ``make_entry(function)`` under ``name`` and returning the function unchanged;
        the name is checked at once, so a malformed one fails where the decorator is written."""
        self.check_name(name)

        def decorate(function: Callable) -> Callable:
            self.register(name, make_entry(function))
            return function

        return decorate

    def get(self, name: str) -> T:
        """The entry of ``name``; ValueError naming :attr:`kind` and listing the registered names otherwise."""
        if name not in self:
            check_choice(name, self.kind, self.names())
        return self._entries[name]

    def unregister(self, name: str) -> T:
        """Remove ``name`` (e.g. a test's temporary entry) and return its entry; ValueError as :meth:`get`."""
        entry = self.get(name)
        del self._entries[name]
        return entry

    def names(self) -> list[str]:
        """The registered names, sorted or in registration order (see ``sort``)."""
        return sorted(self._entries) if self.sort else list(self._entries)

    def as_mapping(self) -> Mapping[str, T]:
        """A read-only live view name → entry (in registration order), for code that wants a dict."""
        return MappingProxyType(self._entries)

    def __contains__(self, name) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
