"""Checkpoint files: weights as safetensors, metadata as JSON, optimiser/RNG state separately.

A checkpoint ``NAME`` is three files in one folder:

* ``NAME.safetensors`` — the upsampler's state dict (float32), plus the metadata as a JSON string
  under the safetensors metadata key ``"wrcup"`` (so a single file is self-describing);
* ``NAME.json`` — the same metadata, human-readable;
* ``NAME.state.pt`` — optimiser, scheduler and RNG state for ``--resume`` (plain tensors and
  numbers only, loaded with ``weights_only=True``).

Every file is written atomically.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .._io import atomic_path, write_json

METADATA_KEY = "wrcup"
REQUIRED_METADATA = ("backbone", "dim", "patch_size", "operator")


def save_checkpoint(path: str | Path, state_dict: dict, metadata: dict, train_state: dict | None = None) -> Path:
    """Write ``path`` (.safetensors), its .json sidecar and, if given, the .state.pt training state."""
    path = Path(path).with_suffix(".safetensors")
    missing = [k for k in REQUIRED_METADATA if k not in metadata]
    if missing:
        raise ValueError(f"metadata is missing required keys {missing}")
    tensors = {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous()
               for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(metadata, default=str)})
    write_json(path.with_suffix(".json"), metadata)
    if train_state is not None:
        with atomic_path(path.with_suffix(".state.pt")) as tmp:
            torch.save(train_state, tmp)
    return path


def read_metadata(path: str | Path) -> dict:
    """Metadata stored inside a .safetensors checkpoint (clear error when absent)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    with safe_open(str(path), framework="pt") as f:
        meta = (f.metadata() or {}).get(METADATA_KEY)
    if meta is None:
        raise ValueError(f"{path} has no wrcup metadata (key {METADATA_KEY!r}); was it written by wrcup?")
    meta = json.loads(meta)
    missing = [k for k in REQUIRED_METADATA if k not in meta]
    if missing:
        raise ValueError(f"checkpoint metadata in {path} is missing keys {missing}")
    return meta


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[dict, dict]:
    """Return ``(state_dict, metadata)`` of a .safetensors checkpoint."""
    from safetensors.torch import load_file

    meta = read_metadata(path)
    return load_file(str(path), device=str(map_location)), meta


def load_train_state(path: str | Path) -> dict:
    """The optimiser/scheduler/RNG state saved beside a checkpoint (``weights_only=True``)."""
    state_path = Path(path).with_suffix(".state.pt")
    if not state_path.is_file():
        raise FileNotFoundError(f"no training state beside {path} (expected {state_path}); cannot resume")
    return torch.load(state_path, map_location="cpu", weights_only=True)
