"""Smoke run of benchmarks/output_size.py on the example photos at a tiny size: every route gets a score."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from wrcup.models.names import DEFAULT_CHECKPOINT

REPO = Path(__file__).resolve().parents[2]


def test_output_size_benchmark_small(tmp_path, real_photos):
    out = tmp_path / "out.json"
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "output_size.py"), *map(str, real_photos[:2]),
                          "--every", "1", "--size", "28", "--scales", "2,3,4,8", "--variants", "--threads", "1",
                          "--cache", str(tmp_path / "cache"), "--out", str(out), "--quiet"],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["images"] == 2 and set(result["summary"]) == {"x2", "x3", "x4", "x8"}
    assert result["model"] == DEFAULT_CHECKPOINT  # the shipped model unless --model names another
    assert set(result["summary"]["x3"]) == {"bilinear", "learned", "learned-bilinear-norm", "learned-under+bilinear",
                                            "learned-no-antialias", "learned-patch-p-guide", "learned-1pass+guided"}
    one_pass = {"bilinear", "learned", "learned-bilinear-norm", "learned-1pass+bilinear", "learned-1pass+guided",
                "learned-patch-p-guide"}
    assert set(result["summary"]["x4"]) == one_pass
    assert set(result["summary"]["x8"]) == one_pass | {"learned-2pass+bilinear", "learned-2pass+guided"}
    for routes in result["summary"].values():
        for v in routes.values():
            assert -1 <= v["cosine"] <= 1 and v["nmse"] >= 0 and v["norm_ratio"] > 0
    # at 2× the bilinear norm changes lengths only: same cosine as learned
    x2 = result["summary"]["x2"]
    assert abs(x2["learned-bilinear-norm"]["cosine"] - x2["learned"]["cosine"]) < 1e-5
