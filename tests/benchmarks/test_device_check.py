"""Smoke run of benchmarks/device_check.py on CPU (its tiny version): every section runs and reports sane JSON."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from wrcup.models.bundle import checkpoint_path
from wrcup.models.checkpoint import read_metadata
from wrcup.models.names import DEFAULT_CHECKPOINT
from wrcup.nn import list_operators

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_device_check_tiny_on_cpu(tmp_path):
    out = tmp_path / "device_check.json"
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "device_check.py"), "--device", "cpu",
                          "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["plan"] == "tiny" and result["environment"]["device"] == "cpu"
    assert sorted(r["operator"] for r in result["operators"]) == sorted(list_operators())
    for row in result["operators"]:
        for key in ("forward", "forward_backward"):
            assert "error" not in row[key], row
            assert row[key]["ms"] > 0 and row[key]["peak_mib"] is None
    assert sorted(r["network"] for r in result["networks"]) == sorted(list_operators())
    for row in result["networks"]:
        for key in ("forward", "forward_backward", "forward_backward_bf16_autocast"):
            assert "error" not in row[key] and row[key]["ms"] > 0, row
    train = result["training"]
    assert train["steps"] == 2 and train["data"] == "synthetic" and train["images"] == 4
    assert train["median_step_ms"] > 0 and math.isfinite(train["final_losses"]["total"])
    # the shipped checkpoint's recipe, at the tiny plan's one size
    recipe = read_metadata(checkpoint_path(DEFAULT_CHECKPOINT))["config"]
    assert train["checkpoint"] == DEFAULT_CHECKPOINT
    assert (train["operator"], train["residual"]) == (recipe["operator"], recipe["residual"])
    assert train["high_res"] == 112 and train["scale_mix"] is None
    assert list(train["median_step_ms_by_high_res"]) == ["112"]
