"""Where converted backbone weights live, and how they are written and checked.

Cache folder: ``$WRCUP_CACHE`` if set, else the platform's user cache folder:
``$XDG_CACHE_HOME/wrcup`` (or ``~/.cache/wrcup``) on Linux, ``~/Library/Caches/wrcup`` on macOS,
``%LOCALAPPDATA%\\wrcup`` on Windows. Converted weights go to ``<cache>/backbones/<name>.safetensors``.

Integrity: every file written here carries, in its safetensors metadata, ``data_sha256`` = the sha256 of the
file's tensor data section (all bytes after the JSON header). A truncated or corrupted file either fails to
parse or fails that check; :func:`read_checked_safetensors` (from ``wrcup._cache``) then raises
:class:`CorruptCacheError` and the caller rebuilds the file. Files are written to a temporary file in the same folder and moved into place with
``os.replace``, so a reader never sees a half-written file and concurrent writers do not collide.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

# the checked reader and writer are those of every wrcup cache (wrcup._cache); re-exported under their old names
from .._cache import CHECKSUM_KEY, CorruptCacheError, read_checked_safetensors, write_checked_safetensors

__all__ = ["CHECKSUM_KEY", "CorruptCacheError", "backbone_cache_path", "cache_dir", "read_checked_safetensors",
           "write_checked_safetensors"]


def cache_dir() -> Path:
    """The wrcup cache folder (not created here); see the module docstring for the rules."""
    override = os.environ.get("WRCUP_CACHE")
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "wrcup"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "wrcup"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "wrcup"


def backbone_cache_path(name: str) -> Path:
    """Path of the converted weights of backbone ``name`` (may not exist yet)."""
    return cache_dir() / "backbones" / f"{name}.safetensors"
