"""Smoke run of benchmarks/train.py --quick --bf16: old, fast and bfloat16 training steps run, the JSON has every
phase."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_train_benchmark_quick(tmp_path):
    out = tmp_path / "train.json"
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "train.py"), "--quick", "--threads", "2",
                          "--online", "--bf16", "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["quick"] is True and result["threads"] == 2
    rows = {r["variant"]: r for r in result["rows"]}
    assert set(rows) == {"current", "fast", "fast, passes not overlapped", "fast+bf16",
                         "fast+bf16, passes not overlapped"}
    assert rows["current"]["fast"] is False and rows["fast"]["fast"] is True
    assert rows["fast+bf16"]["precision"] == "bfloat16" and rows["fast"]["precision"] == "auto"
    phases = {"data", "augment", "forward", "loss", "backward", "optimizer"}
    for r in rows.values():
        assert set(r["cpu_ms"]) == set(r["wall_ms"]) == phases
        assert r["step_wall_ms"] > 0 and r["steps_per_s"] > 0
        assert r["wall_ms"]["forward"] > 0 and r["wall_ms"]["data"] > 0
        assert all(math.isfinite(loss) and loss > 0 for loss in r["losses"])
    # the sequential variants time their phases apart; the overlapped one counts the passes as "forward"
    assert rows["current"]["wall_ms"]["backward"] > 0 and rows["fast"]["wall_ms"]["backward"] == 0
    assert all(math.isfinite(v) and v > 0 for v in result["speedup_current_over_fast"].values())
    assert all(math.isfinite(v) and v > 0 for v in result["speedup_current_over_fast_bf16"].values())
    assert result["online_backbone_per_batch"]["wall_ms"] > 0
    assert "| current | 112 |" in res.stdout and "current / fast:" in res.stdout and "current / fast+bf16:" in res.stdout
