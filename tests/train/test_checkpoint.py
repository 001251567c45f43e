"""Checkpoint files: round trip, metadata, clear errors, atomic writes."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from wrcup.train.checkpoint import load_checkpoint, load_train_state, read_metadata, save_checkpoint

META = {"backbone": "dinov2-s14-imgfocus", "dim": 4, "patch_size": 14, "operator": "transposed", "steps": 3}


def test_round_trip_with_metadata_and_train_state(tmp_path):
    sd = {"w": torch.randn(3, 4), "n": torch.tensor(7)}
    path = save_checkpoint(tmp_path / "run" / "ck", sd, META, train_state={"step": 3, "m": torch.ones(2)})
    assert path.suffix == ".safetensors"
    state, meta = load_checkpoint(path)
    assert torch.equal(state["w"], sd["w"]) and int(state["n"]) == 7
    assert meta == META == json.loads(path.with_suffix(".json").read_text())
    assert load_train_state(path)["step"] == 3
    assert not list(tmp_path.glob("run/.*tmp"))  # no temporary files left behind


def test_missing_metadata_key_is_refused(tmp_path):
    with pytest.raises(ValueError, match="operator"):
        save_checkpoint(tmp_path / "x", {"w": torch.zeros(1)}, {"backbone": "b", "dim": 1, "patch_size": 14})


def test_foreign_safetensors_file_gets_a_clear_error(tmp_path):
    save_file({"w": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="no wrcup metadata"):
        read_metadata(tmp_path / "plain.safetensors")
    with pytest.raises(FileNotFoundError, match="not found"):
        read_metadata(tmp_path / "absent.safetensors")
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        load_train_state(tmp_path / "plain.safetensors")
