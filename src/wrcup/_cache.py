"""On-disk caches of computed tensors (training targets, evaluation features, TokenCut keys, converted weights).

One key function, one writer, one reader:

- :func:`cache_key` names an entry: the sha1 of its named parts, cut to a fixed number of hex digits.
- :func:`write_entry` writes a safetensors file atomically (temporary file in the same folder, fsync,
  ``os.replace``) with ``data_sha256`` = the sha256 of its tensor data section in the metadata.
- :func:`read_entry` returns an entry's tensors, or None when there is nothing usable to read. A truncated or
  corrupt file (a crash of another tool, a full disk, a bad copy) fails to parse, fails its checksum or lacks
  a tensor; it is then reported once (a warning), removed and left to the caller to recompute, never a crash.
  Entries written before checksums existed carry none and are checked by parsing alone (safetensors refuses a
  file whose header does not cover it exactly, which catches truncation).

Layering: this module imports only the standard library, torch, safetensors and :mod:`wrcup._io` (its atomic
writes), so training, evaluation and the backbone loaders all build on it.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import warnings
from pathlib import Path
from typing import Callable, Mapping

import torch

from ._io import atomic_path

CHECKSUM_KEY = "data_sha256"

__all__ = ["CHECKSUM_KEY", "CorruptCacheError", "cache_key", "cached", "entry_is_usable", "read_checked_safetensors", "read_entry",
           "write_checked_safetensors", "write_entry"]


class CorruptCacheError(ValueError):
    """A cache file is truncated, unreadable or fails its checksum."""


def cache_key(parts: Mapping[str, object], length: int, structured: bool = False) -> str:
    """The identity of a cache entry: ``sha1(...).hexdigest()[:length]`` of its named parts.

    Args:
        parts: name → value, in the order that defines the key.
        length: hex digits kept.
        structured: False (flat parts): the values' ``str()`` joined with ``"|"`` in the given order; the names
            only document the parts (this is the format of every feature and training-target entry written so
            far, e.g. ``"v2|<image sha256>|<backbone>|..."``). True (parts holding lists or dicts): the JSON of the
            whole mapping, names included, keys sorted.
    """
    if structured:
        text = json.dumps(dict(parts), sort_keys=True, default=str)
    else:
        text = "|".join(str(v) for v in parts.values())
    return hashlib.sha1(text.encode()).hexdigest()[:length]


def _split_safetensors(blob: bytes) -> tuple[dict, memoryview]:
    """Parse a safetensors byte string into (header dict, data section). Raises CorruptCacheError."""
    if len(blob) < 8:
        raise CorruptCacheError(f"file too short ({len(blob)} bytes) to be a safetensors file")
    (header_len,) = struct.unpack("<Q", blob[:8])
    if header_len > len(blob) - 8:
        raise CorruptCacheError(f"header length {header_len} exceeds the file size {len(blob)} (truncated file?)")
    try:
        header = json.loads(blob[8:8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorruptCacheError(f"unreadable safetensors header: {err}") from err
    if not isinstance(header, dict):
        raise CorruptCacheError("safetensors header is not a JSON object")
    return header, memoryview(blob)[8 + header_len:]


def write_checked_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                              metadata: dict[str, str] | None = None) -> Path:
    """Write ``tensors`` to ``path`` atomically, with the data-section sha256 in the metadata.

    Args:
        tensors: name → tensor (moved to CPU and made contiguous here).
        path: final file path; its folder is created if needed.
        metadata: extra string → string metadata stored in the header.
    Returns:
        ``path``.
    """
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    # The data section does not depend on the metadata, so hash it from a first serialisation.
    _, data = _split_safetensors(save(tensors))
    digest = hashlib.sha256(data).hexdigest()
    blob = save(tensors, metadata={**{str(k): str(v) for k, v in (metadata or {}).items()}, CHECKSUM_KEY: digest})
    path = Path(path)
    # cache files are ordinary readable files whatever the umask
    with atomic_path(path, mode=0o644) as tmp, open(tmp, "wb") as handle:
        handle.write(blob)
        handle.flush()
        os.fsync(handle.fileno())  # the data is on disk before the rename makes the entry visible
    return path


def read_checked_safetensors(path: str | os.PathLike, require_checksum: bool = True
                             ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file, verifying its ``data_sha256`` when it has one.

    Returns:
        (tensors on CPU, metadata dict).
    Raises:
        FileNotFoundError: no file at ``path``.
        CorruptCacheError: truncated, unparsable, checksum mismatch, or no checksum while ``require_checksum``.
    """
    from safetensors.torch import load

    blob = Path(path).read_bytes()
    header, data = _split_safetensors(blob)
    metadata = header.get("__metadata__") or {}
    expected = metadata.get(CHECKSUM_KEY)
    if expected:
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise CorruptCacheError(f"{path} fails its checksum (sha256 {actual[:12]}… ≠ {expected[:12]}…)")
    elif require_checksum:
        raise CorruptCacheError(f"{path} has no {CHECKSUM_KEY} in its metadata")
    try:
        tensors = load(blob)
    except Exception as err:  # safetensors raises its own error type for malformed files
        raise CorruptCacheError(f"{path} is not a valid safetensors file: {err}") from err
    return tensors, dict(metadata)


def write_entry(path: str | os.PathLike, tensors: dict[str, torch.Tensor]) -> None:
    """Write a cache entry (see the module docstring)."""
    write_checked_safetensors(tensors, path)


def read_entry(path: str | os.PathLike | None, names: tuple[str, ...]) -> dict[str, torch.Tensor] | None:
    """The tensors of a cache entry, or None when there is none to use: no path, no file, or a file that is
    truncated, corrupt or lacks one of ``names``; such a file is reported (a warning naming it and the problem)
    and removed, so the caller recomputes and rewrites it."""
    if path is None or not Path(path).is_file():
        return None
    try:
        tensors, _ = read_checked_safetensors(path, require_checksum=False)
        missing = [n for n in names if n not in tensors]
        if not missing:
            return tensors
        problem = f"it lacks {', '.join(missing)}"
    except (CorruptCacheError, OSError) as err:
        problem = str(err)
    warnings.warn(f"cache entry {path} is unusable ({problem}); it is removed and recomputed", stacklevel=2)
    Path(path).unlink(missing_ok=True)
    return None


def entry_is_usable(path: str | os.PathLike, names: tuple[str, ...]) -> bool:
    """Whether the entry at ``path`` exists and looks whole, from its header alone (cheap: no tensor data is
    read): a safetensors header that parses, names every one of ``names``, and whose offsets end exactly at the
    file's end (a truncated file fails this). A damaged entry is reported and removed as in :func:`read_entry`;
    a corrupt data section is only caught when the entry is read."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                raise CorruptCacheError(f"file too short ({len(head)} bytes) to be a safetensors file")
            (header_len,) = struct.unpack("<Q", head)
            size = path.stat().st_size
            if header_len > size - 8:
                raise CorruptCacheError(f"header length {header_len} exceeds the file size {size} (truncated file?)")
            header, _ = _split_safetensors(head + handle.read(header_len))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        if 8 + header_len + max(ends, default=0) != size:
            raise CorruptCacheError(f"its tensors end at byte {8 + header_len + max(ends, default=0)}, the file at "
                                    f"{size} (truncated file?)")
        missing = [n for n in names if n not in header]
        if missing:
            raise CorruptCacheError(f"it lacks {', '.join(missing)}")
    except (CorruptCacheError, OSError, KeyError, TypeError, ValueError, IndexError) as err:
        warnings.warn(f"cache entry {path} is unusable ({err}); it is removed and recomputed", stacklevel=2)
        path.unlink(missing_ok=True)
        return False
    return True


def cached(path: str | os.PathLike | None, names: tuple[str, ...],
           compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The entry at ``path`` (see :func:`read_entry`), else ``compute()``, written to ``path`` (when not None)."""
    entry = read_entry(path, names)
    if entry is not None:
        return entry
    tensors = compute()
    if path is not None:
        write_entry(path, tensors)
    return tensors
