"""Where converted backbone weights live, and how they are written and checked.

Cache folder: ``$WRCUP_CACHE`` if set, else the platform's user cache folder:
``$XDG_CACHE_HOME/wrcup`` (or ``~/.cache/wrcup``) on Linux, ``~/Library/Caches/wrcup`` on macOS,
``%LOCALAPPDATA%\\wrcup`` on Windows. Converted weights go to ``<cache>/backbones/<name>.safetensors``.

Integrity: every file written here carries, in its safetensors metadata, ``data_sha256`` = the sha256 of the
file's tensor data section (all bytes after the JSON header). A truncated or corrupted file either fails to
parse or fails that check; :func:`read_checked_safetensors` then raises :class:`CorruptCacheError` and the
caller rebuilds the file. Files are written to a temporary file in the same folder and moved into place with
``os.replace``, so a reader never sees a half-written file and concurrent writers do not collide.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
import tempfile
from pathlib import Path

import torch

CHECKSUM_KEY = "data_sha256"


class CorruptCacheError(ValueError):
    """A cached weights file is truncated, unreadable or fails its checksum."""


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


def write_checked_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> Path:
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
    blob = save(tensors, metadata={**{str(k): str(v) for k, v in metadata.items()}, CHECKSUM_KEY: digest})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp_name, 0o644)  # mkstemp makes it private; cache files are ordinary readable files
        with os.fdopen(fd, "wb") as handle:
            handle.write(blob)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        raise
    return path


def read_checked_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a file written by :func:`write_checked_safetensors`, verifying its checksum.

    Returns:
        (tensors on CPU, metadata dict).
    Raises:
        FileNotFoundError: no file at ``path``.
        CorruptCacheError: truncated, unparsable, missing checksum or checksum mismatch.
    """
    from safetensors.torch import load

    blob = Path(path).read_bytes()
    header, data = _split_safetensors(blob)
    metadata = header.get("__metadata__") or {}
    expected = metadata.get(CHECKSUM_KEY)
    if not expected:
        raise CorruptCacheError(f"{path} has no {CHECKSUM_KEY} in its metadata")
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise CorruptCacheError(f"{path} fails its checksum (sha256 {actual[:12]}… ≠ {expected[:12]}…)")
    try:
        tensors = load(blob)
    except Exception as err:  # safetensors raises its own error type for malformed files
        raise CorruptCacheError(f"{path} is not a valid safetensors file: {err}") from err
    return tensors, dict(metadata)
