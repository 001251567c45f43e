"""One frame of DAVIS label propagation (:func:`wrcup.eval.propagation.propagate_frame`) for several target tile
sides, interleaved in one process on the same random unit features: time per frame and the largest difference of
the soft labels from the first tile side's.

Grids (h×w cells, radius in cells) as the DAVIS task makes them: frame shorter side 224 or 448 at 1×/2×/4× the
ViT-S/14 grid, with the window radius 12 patches scaled by the method's factor; 8 context frames (the first and
``n_last = 7``), 384 channels, 2 classes, top 5.

    OMP_NUM_THREADS=1 python benchmarks/propagation.py --tiles 8,12,16 --repeats 5 --out benchmarks/results/propagation.json
    OMP_NUM_THREADS=1 python benchmarks/propagation.py --grids 128x228r48 --tiles 8,12 --repeats 1   # 448 at 4×
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from datetime import date

from _common import cpu_model  # noqa: E402

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see benchmarks/ops.py; must precede torch

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from wrcup.eval import propagation  # noqa: E402

# 224 at 4× (16×28 patches), 448 at 2× (32×57), 448 at 1×; 448 at 4× (128×228, ~1 min a frame) on request
DEFAULT_GRIDS = "64x112r48,64x114r24,32x57r12"


def _grid(text: str) -> tuple[int, int, int]:
    hw, r = text.split("r")
    h, w = hw.split("x")
    return int(h), int(w), int(r)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grids", default=DEFAULT_GRIDS, help="comma-separated HxWrRADIUS (cells)")
    ap.add_argument("--tiles", default="8,12,16", help="tile sides to compare; the first is the reference")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="write the JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tiles = [int(t) for t in args.tiles.split(",")]
    context, channels, classes = 8, 384, 2
    rows = []
    for h, w, radius in map(_grid, args.grids.split(",")):
        g = torch.Generator().manual_seed(0)
        feats = F.normalize(torch.randn(context + 1, channels, h, w, generator=g), dim=1)
        labels = torch.softmax(torch.randn(context, classes, h, w, generator=g), dim=1)
        plans = {}
        for tile in tiles:  # plans are built once per video in the task; not timed
            shape = propagation._tile_size(h, w, context, radius, 2 ** 25, local_tile=tile)
            plans[tile] = propagation._neighbourhood_plan(h, w, radius, shape, feats.device)
        times = {t: [] for t in tiles}
        outs = {}
        for _ in range(args.repeats):
            for tile in tiles:
                t0 = time.perf_counter()
                outs[tile] = propagation.propagate_frame(feats[0], feats[1:], labels, 5, 0.1, radius, plan=plans[tile])
                times[tile].append(time.perf_counter() - t0)
        ref = tiles[0]
        row = {"grid": [h, w], "radius": radius, "seconds": {t: statistics.median(v) for t, v in times.items()},
               "speedup_vs_first": {t: statistics.median(times[ref]) / statistics.median(v) for t, v in times.items()},
               "max_abs_diff_vs_first": {t: float((outs[t] - outs[ref]).abs().max()) for t in tiles}}
        print(json.dumps(row), flush=True)
        rows.append(row)
    result = {"date": str(date.today()), "cpu": cpu_model(), "threads": args.threads, "repeats": args.repeats,
              "torch": torch.__version__, "rows": rows}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
