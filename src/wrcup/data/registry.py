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


_REGISTRY: dict[str, dict[str, DatasetEntry]] = {}


def register_dataset(kind: str, name: str, open: Callable, *, splits: tuple[str, ...] = (),
                     options: tuple[str, ...] = (), help: str = "", **info) -> DatasetEntry:
    """Register ``open`` as reader ``name`` of task kind ``kind``; ValueError when the name is taken."""
    entries = _REGISTRY.setdefault(kind, {})
    if name in entries:
        raise ValueError(f"dataset {name!r} is already registered for {kind!r}")
    entries[name] = DatasetEntry(kind, name, open, tuple(splits), tuple(options), help, dict(info))
    return entries[name]


def unregister_dataset(kind: str, name: str) -> DatasetEntry:
    """Remove reader ``name`` of ``kind`` (e.g. a test's temporary reader); returns its entry."""
    entry = get_dataset(kind, name)
    del _REGISTRY[kind][name]
    return entry


def _load_readers() -> None:
    import wrcup.data  # noqa: F401  (the readers register themselves on import)


def list_datasets(kind: str) -> list[str]:
    """Names of the readers of ``kind``, in registration order."""
    _load_readers()
    return list(_REGISTRY.get(kind, {}))


def get_dataset(kind: str, name: str) -> DatasetEntry:
    """The entry of reader ``name`` of ``kind``; ValueError naming the choices otherwise."""
    from .._checks import check_choice

    check_choice(name, "dataset", list_datasets(kind))
    return _REGISTRY[kind][name]
