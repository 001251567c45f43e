"""Peak memory and time split of ``wrcup upsample --to-image`` on a large photo, and tiled-vs-untiled seams.

Each run is a fresh process (the peak RSS of a child, ``resource.getrusage(RUSAGE_CHILDREN)``), so the figure is
the high-water mark of the whole command: Python, torch, the model, the photo and the upsampling. The time split
(backbone, learned passes, bilinear growth and writing) is read from the command's status line.

The test photo is made by upscaling a real photo (Lanczos) to ``--width``×``--height``:

    python benchmarks/large_image.py $DATA/imagenet-sample/n01440764_tench.JPEG --out /tmp/large
    python benchmarks/large_image.py PHOTO --out /tmp/large --seams    # also the seam figure at 448 (≈1 min)
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_cli(photo: Path, out: Path, extra: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "wrcup.cli.main", "upsample", str(photo), "--out", str(out),
                           "--overwrite", *extra], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(proc.stderr[-2000:])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
    row = {"args": extra, "wall_s": round(wall, 1), "peak_rss_gib": round(peak / 2**30, 3)}
    m = re.search(r"backbone ([\d.]+) s, upsampling ([\d.]+) s \(learned passes ([\d.]+) s, bilinear growth and "
                  r"writing ([\d.]+) s\)", proc.stderr)
    if m:
        row.update(zip(("backbone_s", "upsampling_s", "learned_passes_s", "growth_and_writing_s"),
                       (float(v) for v in m.groups())))
    return row


def seams(photo: Path, size: int = 448) -> list[dict]:
    import torch
    import torch.nn.functional as F

    import wrcup
    from wrcup.data.images import load_image, resize_short_side
    from wrcup.models.tiling import tile_spans, tiled_pass

    model = wrcup.load()
    up = model.upsampler
    x = model.backbone.prepare(resize_short_side(load_image(photo)[None], size).clamp(0, 1))
    rows = []
    with torch.inference_mode():
        low = model.backbone(x)
        quarter = up.image_branch.quarter_map(model.backbone.normalise(x))
        grid = up.upsample_features(low, quarter, 14.0)
        ref = up.upsample_features(grid, quarter, 7.0)
        for overlap in (0, 4, 8, 16):
            tile = 24 + overlap
            spans = [tile_spans(n, tile, overlap) for n in grid.shape[-2:]]
            cos = F.cosine_similarity(tiled_pass(up, grid, quarter, 7.0, tile, overlap), ref, dim=1)[0]
            k = int(cos.argmin())
            rows.append({"grid": list(grid.shape[-2:]), "tile": tile, "overlap": overlap,
                         "actual_min_overlap": min(a[1] - b[0] for s in spans for a, b in zip(s, s[1:])),
                         "mean_cos": round(float(cos.mean()), 5), "min_cos": round(float(cos.min()), 4),
                         "min_at_yx": [k // cos.shape[1], k % cos.shape[1]],
                         "share_below_0.99": round(float((cos < 0.99).float().mean()), 5)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("photo", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--width", type=int, default=4000)
    ap.add_argument("--height", type=int, default=3000)
    ap.add_argument("--seams", action="store_true")
    args = ap.parse_args()
    from PIL import Image

    args.out.mkdir(parents=True, exist_ok=True)
    big = args.out / f"photo{args.width}x{args.height}.jpg"
    Image.open(args.photo).convert("RGB").resize((args.width, args.height), Image.LANCZOS).save(big, quality=92)
    result = {"photo": str(args.photo), "upscaled_to": [args.width, args.height],
              "to_image": run_cli(big, args.out / "to-image", ["--to-image"])}
    if args.seams:
        result["seams"] = seams(args.photo)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
