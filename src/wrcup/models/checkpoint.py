"""Checkpoint files: weights as safetensors, metadata as JSON, optimiser/scheduler state separately.

A checkpoint ``NAME`` is up to three files in one folder:

* ``NAME.safetensors`` — the upsampler's state dict (float32), plus the metadata as a JSON string
  under the safetensors metadata key ``"wrcup"`` (so a single file is self-describing). This file *is*
  the checkpoint: loaders read only it and, to resume, the training state it names;
* ``NAME.<id>.state.pt`` — optimiser, scheduler and step for ``--resume`` (plain tensors and numbers
  only, loaded with ``weights_only=True``), under a name new to every save. The weights file names it,
  with its size and sha256, under the safetensors metadata key ``"wrcup_train_state"``;
* ``NAME.json`` — the same metadata, human-readable (wrcup never reads it back).

The set is committed as one: (1) the training state is written under its new name, (2) the weights file
replaces the old one in one ``os.replace`` — the commit —, (3) the .json copy is rewritten, (4) training
states the weights no longer name are removed. A crash before (2) leaves the previous checkpoint whole
(its own state file is removed only after the commit), a crash after (2) the new one; a crash between (2)
and (3) leaves the .json one save behind until the next save. Every file is written atomically, so a
crash never leaves a truncated one; a truncated or altered file (a bad copy) is a clear error naming it.

Checkpoints written before the state was named (state in ``NAME.state.pt``) and weights-only ones (the
shipped checkpoint: weights + .json) still load.
"""
from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .._io import atomic_path, file_sha256, write_json

METADATA_KEY = "wrcup"
TRAIN_STATE_KEY = "wrcup_train_state"
REQUIRED_METADATA = ("backbone", "dim", "patch_size", "operator")


def _state_files(path: Path) -> list[Path]:
    """Training-state files of checkpoint ``path``: ``NAME.<32 hex>.state.pt`` and the older ``NAME.state.pt``."""
    pattern = re.compile(re.escape(path.stem) + r"(\.[0-9a-f]{32})?\.state\.pt")
    return [p for p in path.parent.iterdir() if pattern.fullmatch(p.name)]


def save_checkpoint(path: str | Path, state_dict: dict, metadata: dict, train_state: dict | None = None) -> Path:
    """Write ``path`` (.safetensors), its .json copy and, if given, the training state it names (see above)."""
    path = Path(path).with_suffix(".safetensors")
    missing = [k for k in REQUIRED_METADATA if k not in metadata]
    if missing:
        raise ValueError(f"metadata is missing required keys {missing}")
    tensors = {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous()
               for k, v in state_dict.items()}
    header = {METADATA_KEY: json.dumps(metadata, default=str)}
    state_path = None
    if train_state is not None:
        state_path = path.with_name(f"{path.stem}.{uuid.uuid4().hex}.state.pt")
        with atomic_path(state_path) as tmp:
            torch.save(train_state, tmp)
        header[TRAIN_STATE_KEY] = json.dumps({"file": state_path.name, "size": state_path.stat().st_size,
                                              "sha256": file_sha256(state_path)})
    with atomic_path(path) as tmp:  # the commit
        save_file(tensors, str(tmp), metadata=header)
    write_json(path.with_suffix(".json"), metadata)
    for stale in _state_files(path):
        if stale != state_path:
            os.remove(stale)
    return path


def _header(path: Path) -> dict:
    """The safetensors metadata of ``path`` (clear errors for a missing, truncated or foreign file)."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise ValueError(f"checkpoint {path} is truncated or corrupt ({err}); copy it again or use "
                         "another checkpoint") from None


def read_metadata(path: str | Path) -> dict:
    """Metadata stored inside a .safetensors checkpoint (clear error when absent)."""
    path = Path(path)
    meta = _header(path).get(METADATA_KEY)
    if meta is None:
        raise ValueError(f"{path} has no wrcup metadata (key {METADATA_KEY!r}); was it written by wrcup?")
    try:
        meta = json.loads(meta)
    except json.JSONDecodeError as err:
        raise ValueError(f"checkpoint {path} is truncated or corrupt (its metadata is not JSON: {err})") from None
    missing = [k for k in REQUIRED_METADATA if k not in meta]
    if missing:
        raise ValueError(f"checkpoint metadata in {path} is missing keys {missing}")
    return meta


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[dict, dict]:
    """Return ``(state_dict, metadata)`` of a .safetensors checkpoint."""
    from safetensors.torch import load_file

    meta = read_metadata(path)
    try:
        return load_file(str(path), device=str(map_location)), meta
    except SafetensorError as err:
        raise ValueError(f"checkpoint {path} is truncated or corrupt ({err})") from None


def load_train_state(path: str | Path) -> dict:
    """The optimiser/scheduler state that checkpoint ``path`` names, checked against its recorded size and
    sha256 (``weights_only=True``); older checkpoints: ``NAME.state.pt`` beside them, unchecked."""
    path = Path(path)
    entry = _header(path).get(TRAIN_STATE_KEY)
    if entry is None:
        state_path = path.with_suffix(".state.pt")
        if not state_path.is_file():
            raise FileNotFoundError(f"no training state beside {path} (expected {state_path}); cannot resume")
    else:
        entry = json.loads(entry)
        state_path = path.with_name(entry["file"])
        if not state_path.is_file():
            raise FileNotFoundError(f"the training state {state_path} named by {path} is missing; cannot resume")
        size = state_path.stat().st_size
        if size != entry["size"] or file_sha256(state_path) != entry["sha256"]:
            raise ValueError(f"the training state {state_path} does not match the size/sha256 recorded in {path} "
                             f"({size} vs {entry['size']} bytes): truncated or altered; cannot resume")
    try:
        return torch.load(state_path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"the training state {state_path} is truncated or corrupt ({first_line}); cannot resume") from None
