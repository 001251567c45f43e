"""Smoke run of benchmarks/ops.py --quick: it runs end to end and writes a complete, sane JSON."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_ops_benchmark_quick(tmp_path):
    out = tmp_path / "ops.json"
    res = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "ops.py"), "--quick", "--threads", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["quick"] is True and result["machine"]["threads"] == 1
    (entry,) = result["sizes"]
    expected = {"wrc-reference", "wrc-aligned", "wrc-exact", "converse2d", "transposed", "bilinear"}
    assert set(entry["operators"]) == expected
    for row in [*entry["operators"].values(), entry["transcription_layer"], entry["solve_reference"], entry["solve_transcription"]]:
        assert all(math.isfinite(v) and v >= 0 for v in row.values())
    assert math.isclose(entry["floor_ms"], entry["fft_round_trip_ms"] + entry["weight_convs_ms"])
    assert all(math.isfinite(v) and v > 0 for v in entry["ratios"].values())
    assert [r["operator"] for r in result["memory"]["rows"]] == ["wrc-reference"]
    assert all(r["forward_mib"] is not None for r in result["memory"]["rows"])
    assert [r["dtype"] for r in result["exact"]] == ["float32", "float64"]
    assert all(r["iterations"] >= 1 and r["converged"] for r in result["exact"])
    assert "| wrc-reference |" in res.stdout and "floor (FFT + convs)" in res.stdout
