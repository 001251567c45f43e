"""Smoke run of benchmarks/models.py --quick: every operator's network runs and gets a positive time."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_models_benchmark_quick():
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "models.py"), "--quick", "--threads", "1"],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [line for line in res.stdout.splitlines() if line.startswith("| 56×56 |")]
    names = {r.split("|")[2].strip() for r in rows}
    assert "upsampler[wrc-reference+folded-bn]" in names and "upsampler[wrc-transcription]" in names
    assert len(rows) == 9 and all  # the backbone and 8 networks(float(r.split("|")[3]) > 0 for r in rows)
