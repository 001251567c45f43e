"""Smoke run of benchmarks/models.py --quick: every operator's network runs and gets a positive time."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from wrcup.models.bundle import checkpoint_path
from wrcup.models.checkpoint import read_metadata
from wrcup.models.names import DEFAULT_CHECKPOINT

REPO = Path(__file__).resolve().parents[2]


def test_models_benchmark_quick():
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "models.py"), "--quick", "--threads", "1",
                          "--bf16"],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [line for line in res.stdout.splitlines() if line.startswith("| 56×56 |")]
    names = {r.split("|")[2].strip() for r in rows}
    served = read_metadata(checkpoint_path(DEFAULT_CHECKPOINT))["operator"]  # the default checkpoint's operator
    assert {f"upsampler[{served}+folded-bn]", f"upsampler[{served}+folded-bn, unfused]",
            "upsampler[wrc-transcription]", "backbone under bf16 autocast",
            "served upsampler under bf16 autocast"} <= names
    assert len(rows) == 12  # the backbone, 6 operators' networks, served, served unfused, transcription, 2 × bf16
    assert all(float(r.split("|")[3]) > 0 and float(r.split("|")[4]) > 0 for r in rows)
    assert "56: served / backbone" in res.stdout and "56: backbone / backbone under bf16" in res.stdout and "both under bf16" in res.stdout
