"""The dataset readers, by task kind: each reader registers itself (name, splits, the task options it takes), and
the evaluation tasks take their ``--dataset`` choices, split defaults and readers from here.

Protocols of the kinds (what ``entry.open(root, ...)`` returns):

- ``"segmentation"``: ``open(root, split, **options)`` → a reader with ``num_classes``, ``class_names``,
  ``len()`` and ``reader[i]`` → ``{"image_path", "image" 3×H×W, "label" H×W int64}``; ``splits`` =
  (training split, evaluation split).
- ``"depth"``: ``open(root, split)`` → ``reader[i]`` → ``{"image_path", "image", "depth", "valid"}``.
- ``"discovery"``: ``open(root, **options)`` → ``[{"image_path", "boxes" K×4, "name"}]``; ``info``: ``tau``
  (TokenCut's graph threshold for this data) and ``loader`` (path → image).
- ``"correspondence"``: ``open(root, select=, prepare=, **options)`` → pairs ``{"source", "target",
  "source_points", "target_points", "pck_threshold", "valid", "source_path", "target_path"}`` (+ ``"tag"``
  for pairs generated from a prepared photo); ``select`` thins a list of items, ``prepare`` resizes a photo.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .._registry import Registry

__all__ = ["DatasetEntry", "get_dataset", "list_datasets", "register_dataset", "unregister_dataset"]


@dataclass(frozen=True)
class DatasetEntry:
    """One registered reader: ``open`` builds it; ``options`` names the task options it takes."""

    kind: str
    name: str
    open: Callable
    splits: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    help: str = ""
    info: dict = field(default_factory=dict)


# one registry of readers per task kind
_READERS: dict[str, Registry[DatasetEntry]] = {}


def _readers(kind: str) -> Registry[DatasetEntry]:
    """The readers of ``kind``; ValueError naming the known kinds when none was ever registered (asking about a
    kind does not create it)."""
    if kind not in _READERS:
        raise ValueError(f"no dataset readers are registered for the task kind {kind!r}; kinds with readers: "
                         f"{', '.join(map(repr, _READERS))}")
    return _READERS[kind]


def register_dataset(kind: str, name: str, open: Callable, *, splits: tuple[str, ...] = (),
                     options: tuple[str, ...] = (), help: str = "", **info) -> DatasetEntry:
    """Register ``open`` as reader ``name`` of task kind ``kind``; ValueError when the name is taken."""
    entry = DatasetEntry(kind, name, open, tuple(splits), tuple(options), help, dict(info))
    if kind not in _READERS:
        _READERS[kind] = Registry("dataset", scope=f"for {kind!r}")
    return _READERS[kind].register(name, entry)


def unregister_dataset(kind: str, name: str) -> DatasetEntry:
    """Remove reader ``name`` of ``kind`` (e.g. a test's temporary reader); returns its entry."""
    _load_readers()
    return _readers(kind).unregister(name)


def _load_readers() -> None:
    import wrcup.data  # noqa: F401  (the readers register themselves on import)


def list_datasets(kind: str) -> list[str]:
    """Names of the readers of ``kind``, in registration order (none for a kind without readers)."""
    _load_readers()
    return _READERS[kind].names() if kind in _READERS else []


def get_dataset(kind: str, name: str) -> DatasetEntry:
    """The entry of reader ``name`` of ``kind``; ValueError naming the choices otherwise."""
    _load_readers()
    return _readers(kind).get(name)
