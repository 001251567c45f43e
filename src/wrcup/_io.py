"""Atomic file writes: a crash mid-write never leaves a truncated checkpoint, cache or result."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the result the permissions a plain open() would have
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: str | os.PathLike, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike):
    return json.loads(Path(path).read_text())


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_cache_entry(path: str | os.PathLike | None, names: tuple[str, ...]) -> dict | None:
    """The tensors of a safetensors cache entry, or None when there is none to use: no path, no file, or a file
    that cannot be read or lacks one of ``names``. An unusable file (truncated by a crash of another tool, a full
    disk, a bad copy) is removed with a warning, so the caller recomputes and rewrites it instead of failing."""
    if path is None or not Path(path).is_file():
        return None
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
        missing = [n for n in names if n not in tensors]
        if not missing:
            return tensors
        problem = f"it lacks {', '.join(missing)}"
    except Exception as err:  # safetensors raises its own error type, or OSError for unreadable files
        problem = f"{type(err).__name__}: {err}"
    import warnings

    warnings.warn(f"cache entry {path} is unusable ({problem}); it is removed and recomputed", stacklevel=2)
    Path(path).unlink(missing_ok=True)
    return None
