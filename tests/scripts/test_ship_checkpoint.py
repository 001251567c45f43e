"""scripts/ship_checkpoint.py: a snapshot becomes a shipped checkpoint with identical weights and its provenance."""
from __future__ import annotations

import hashlib

import pytest
import torch

import wrcup
from wrcup.models.checkpoint import load_checkpoint, save_checkpoint
from wrcup.models.upsampler import build_upsampler
from script_helpers import load_script


def _script():
    return load_script("ship_checkpoint")


@pytest.fixture()
def snapshot(tmp_path):
    torch.manual_seed(0)
    net = build_upsampler("wrc-aligned", 384, 14, residual=True)
    for p in net.parameters():
        p.data.add_(0.01 * torch.randn_like(p))
    meta = {"backbone": "dinov2-s14-imgfocus", "dim": 384, "patch_size": 14, "operator": "wrc-aligned",
            "residual": True, "steps": 5000, "finished": False, "config": {"name": "some-run", "seed": 0},
            "weights": "exponential moving average", "ema": {"decay": 0.999, "updates": 1700}}
    return save_checkpoint(tmp_path / "run" / "step-005000.ema.safetensors", net.state_dict(), meta)


def test_shipped_copy_keeps_weights_and_records_source(snapshot, tmp_path):
    out = _script().ship(snapshot, "wrc-test-v2", tmp_path / "ck", note="chosen on dev tasks")
    assert out == tmp_path / "ck" / "wrc-test-v2.safetensors" and out.with_suffix(".json").is_file()
    state, meta = load_checkpoint(out)
    original, original_meta = load_checkpoint(snapshot)
    assert state.keys() == original.keys() and all(torch.equal(state[k], original[k]) for k in state)
    assert meta["name"] == "wrc-test-v2" and meta["finished"] is True and meta["steps"] == 5000
    assert meta["ema"] == original_meta["ema"] and meta["weights"] == "exponential moving average"
    assert meta["config"] == {"name": "some-run", "seed": 0}
    assert meta["source"] == {"snapshot": "step-005000.ema.safetensors", "run": "some-run",
                              "sha256": hashlib.sha256(snapshot.read_bytes()).hexdigest(),
                              "note": "chosen on dev tasks"}
    assert not list(out.parent.glob("*.state.pt"))
    # the result is a checkpoint wrcup.load serves, with the snapshot's served (BatchNorm-folded) weights
    model, from_snapshot = wrcup.load(out), wrcup.load(snapshot)
    assert model.metadata["name"] == "wrc-test-v2" and model.metadata["operator"] == "wrc-aligned"
    served, expected = model.upsampler.state_dict(), from_snapshot.upsampler.state_dict()
    assert served.keys() == expected.keys() and all(torch.equal(served[k], expected[k]) for k in served)


def test_cli_names_a_missing_snapshot(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _script().main([str(tmp_path / "nope.safetensors"), "--name", "x", "--out", str(tmp_path)])
    assert exit_info.value.code == 2 and "snapshot: no such file" in capsys.readouterr().err
