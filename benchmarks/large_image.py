"""Time split and peak memory of ``wrcup upsample --to-image`` on a large photo; the floor of its growth and writing;
tiled-vs-untiled seams.

The test photo is made by upscaling a real photo (Lanczos) to ``--width``×``--height``. Three parts:

- runs: the CLI in a fresh process per run (peak RSS of that process from ``os.wait4``, Linux/macOS), ``--repeat`` rounds,
  the ``--config`` variants alternating within each round; the time split (backbone, learned passes, bilinear
  growth and writing, of which growth computing, waiting for the writer, writer busy) is read from the command's
  status line, and ``upsampling / backbone`` is taken per run (both measured in the same process), then the median.
- floor (``--floor``): in this one process, interleaved for ``--repeat`` rounds on the same photo: the backbone at
  ``--size``, the learned passes, the growth alone (no writing) into reused buffers (bilinear; guided as the
  writer computes it, :func:`wrcup.models.growth.grow_guided`; and guided as it was computed before, every
  coefficient map grown into float32 working copies), touching as many float16 values
  once (a fill of a reused buffer), and writing as many bytes to a new file in ``--out`` (the output's disk).
- seams (``--seams``): the tiled vs untiled second pass at 448 (≈1 min).

    python benchmarks/large_image.py $DATA/imagenet-sample/n01440764_tench.JPEG --out /tmp/large --floor
    python benchmarks/large_image.py PHOTO --out /tmp/large --config "" --config "--max-side 1024" --json r.json
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STATUS = re.compile(r"backbone ([\d.]+) s, upsampling ([\d.]+) s \(learned passes ([\d.]+) s, (?:bilinear|guided) growth and "
                    r"writing ([\d.]+) s: growth ([\d.]+) s, waiting for the writer ([\d.]+) s, writer busy ([\d.]+) s\)")
FIELDS = ("backbone_s", "upsampling_s", "learned_passes_s", "growth_and_writing_s", "growth_s", "wait_s",
          "writer_busy_s")


def run_cli(photo: Path, out: Path, extra: list[str], src: Path = REPO / "src") -> dict:
    """One ``wrcup upsample --to-image`` in a fresh process: its wall time, peak RSS (its own, ``os.wait4``) and
    status-line split."""
    env = dict(os.environ, PYTHONPATH=str(src) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "wrcup.cli.main", "upsample", str(photo), "--out", str(out),
                                 "--overwrite", "--to-image", *extra], env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, rusage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read()
    if proc.returncode:
        raise SystemExit(stderr[-2000:])
    row = {"args": extra, "wall_s": round(wall, 2), "peak_rss_gib": round(rusage.ru_maxrss * 1024 / 2**30, 3)}
    row["status"] = next((line.strip() for line in stderr.splitlines() if "backbone" in line), None)
    m = STATUS.search(stderr)
    if m:
        row.update(zip(FIELDS, (float(v) for v in m.groups())))
        row["upsampling_over_backbone"] = round(row["upsampling_s"] / row["backbone_s"], 2)
    m = re.search(r"features (\d+)×(\d+) \(float16", stderr)
    if m:
        row["features_wh"] = [int(m.group(1)), int(m.group(2))]
    return row


def medians(rows: list[dict]) -> dict:
    keys = [k for k in rows[0] if isinstance(rows[0][k], (int, float)) and all(k in r for r in rows)]
    return {k: round(statistics.median(r[k] for r in rows), 3) for k in keys}


def floor(photo: Path, out: Path, size: int, max_side: int, repeat: int) -> dict:
    """Backbone, learned passes, growth alone, one touch of the output's values and writing its bytes, interleaved
    in this process (seconds, medians over ``repeat`` rounds)."""
    import torch

    import wrcup
    from wrcup.cli.to_image import image_output_size
    from wrcup.data.images import load_image, resize_short_side
    import torch.nn.functional as F

    from wrcup.models.growth import grow_bilinear, grow_guided, grow_scratch_bytes
    from wrcup.models.tiling import learned_grid, learned_passes_to_guidance
    from wrcup.models.to_image import CHUNK_BYTES, plan_chunks
    from wrcup.ops.guided import fit_guided

    torch.set_grad_enabled(False)
    model = wrcup.load()
    image = load_image(photo)
    H, W = image_output_size(image.shape[-2:], max_side)
    x = model.backbone.prepare(resize_short_side(image[None], size).clamp(0, 1))
    photo = F.interpolate(image[None], size=(H, W), mode="bilinear", align_corners=False, antialias=True)[0].clamp_(0, 1)
    del image
    low = model.backbone(x)
    C = low.shape[1]
    chunks = plan_chunks((C, H, W), CHUNK_BYTES)
    cap = max((c1 - c0) * (r1 - r0) * W for c0, c1, r0, r1 in chunks)
    buffers = [torch.empty(cap, dtype=torch.float16) for _ in range(2)]
    for b in buffers:
        b.fill_(0)  # first touch outside the timings
    passes = learned_passes_to_guidance(low.shape[-2:], x.shape[-2:])
    normalised = model.backbone.normalise(x)
    grid = learned_grid(model.upsampler, normalised, low, (H, W), learned_passes=passes)[0].contiguous()
    c0, c1, r0, r1 = chunks[0]
    scratch = torch.empty(grow_scratch_bytes((c1 - c0, *grid.shape[-2:]), (H, W), r1 - r0), dtype=torch.uint8)
    coef_a, coef_b = (t[0] for t in fit_guided(grid[None], photo[None]))
    # the guided growth as the writer computed it before grow_guided: every coefficient map grown chunk by chunk
    # into float32 working copies, then multiplied by the photo (chunks a fifth of the bilinear ones)
    maps_chunks = plan_chunks((C, H, W), CHUNK_BYTES * 2 * H * W // (2 * H * W + 8 * H * W
                                                                  + grow_scratch_bytes((1, *grid.shape[-2:]), (H, W), H)))
    maps_cap = max((c1 - c0) * (r1 - r0) * W for c0, c1, r0, r1 in maps_chunks)
    acc_buf, grow_buf = torch.zeros(maps_cap), torch.zeros(maps_cap)
    path = out / "floor-write.bin"

    def backbone():
        model.backbone(x)

    def learned():
        learned_grid(model.upsampler, normalised, low, (H, W), learned_passes=passes)

    def growth():
        for i, (c0, c1, r0, r1) in enumerate(chunks):
            out_ = buffers[i % 2][:(c1 - c0) * (r1 - r0) * W].view(c1 - c0, r1 - r0, W)
            grow_bilinear(grid[c0:c1], (H, W), out_, (r0, r1), scratch)

    def guided_growth():
        for i, (c0, c1, r0, r1) in enumerate(chunks):
            out_ = buffers[i % 2][:(c1 - c0) * (r1 - r0) * W].view(c1 - c0, r1 - r0, W)
            grow_guided(coef_a[c0:c1], coef_b[c0:c1], photo, out_, (r0, r1))

    def guided_maps_growth():
        for i, (c0, c1, r0, r1) in enumerate(maps_chunks):
            n = (c1 - c0) * (r1 - r0) * W
            shape = (c1 - c0, r1 - r0, W)
            acc, grown = acc_buf[:n].view(shape), grow_buf[:n].view(shape)
            grow_bilinear(coef_b[c0:c1], (H, W), acc, (r0, r1), scratch)
            for colour in range(3):
                grow_bilinear(coef_a[c0:c1, colour], (H, W), grown, (r0, r1), scratch)
                acc.addcmul_(grown, photo[colour:colour + 1, r0:r1])
            buffers[i % 2][:n].view(shape).copy_(acc)

    def touch():
        for i, (c0, c1, r0, r1) in enumerate(chunks):
            buffers[i % 2][:(c1 - c0) * (r1 - r0) * W].fill_(1.0)

    def write():
        with open(path, "wb") as f:
            for i, (c0, c1, r0, r1) in enumerate(chunks):
                f.write(memoryview(buffers[i % 2][:(c1 - c0) * (r1 - r0) * W].numpy()).cast("B"))
        path.unlink()

    parts = {"backbone_s": backbone, "learned_passes_s": learned, "growth_only_s": growth,
             "guided_growth_only_s": guided_growth, "guided_maps_growth_only_s": guided_maps_growth,
             "touch_values_once_s": touch, "write_bytes_s": write}
    times = {k: [] for k in parts}
    for _ in range(repeat):
        for k, fn in parts.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    result = {"size": size, "features_hw": [H, W], "learned_grid": list(grid.shape[-2:]), "channels": C,
              "output_gb": round(C * H * W * 2 / 1e9, 3), "threads": torch.get_num_threads(),
              "runs": {k: [round(t, 3) for t in v] for k, v in times.items()}}
    result.update({k: round(statistics.median(v), 3) for k, v in times.items()})
    return result


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
    from _common import cpu_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("photo", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--width", type=int, default=4000)
    ap.add_argument("--height", type=int, default=3000)
    ap.add_argument("--config", action="append", default=None,
                    help="extra flags of one CLI variant, e.g. '--max-side 1024' or '--size 896' (repeatable; "
                         "default: one run with the defaults; '' is the defaults)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds (default: %(default)s)")
    ap.add_argument("--baseline-src", type=Path, default=None,
                    help="also run every config with the package in this folder (the src/ of a checkout of an "
                         "earlier commit, e.g. a git worktree), alternating with this checkout's: a before/after "
                         "ratio measured in one session")
    ap.add_argument("--floor", action="store_true", help="also the in-process floor at the default size and cap")
    ap.add_argument("--floor-size", type=int, default=448)
    ap.add_argument("--floor-max-side", type=int, default=2048)
    ap.add_argument("--seams", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = ap.parse_args()
    from PIL import Image

    args.out.mkdir(parents=True, exist_ok=True)
    big = args.out / f"photo{args.width}x{args.height}.jpg"
    Image.open(args.photo).convert("RGB").resize((args.width, args.height), Image.LANCZOS).save(big, quality=92)
    configs = [shlex.split(c) for c in (args.config or [""])]
    trees = [("", REPO / "src")] + ([] if args.baseline_src is None else [(" [baseline]", args.baseline_src)])
    runs = {" ".join(c) + tag: [] for c in configs for tag, _ in trees}
    for _ in range(args.repeat):
        for c in configs:
            for tag, src in trees:
                runs[" ".join(c) + tag].append(run_cli(big, args.out / "to-image", c, src))
                print(json.dumps(runs[" ".join(c) + tag][-1]), file=sys.stderr, flush=True)
    result = {"photo": str(args.photo.name), "upscaled_to": [args.width, args.height], "cpu": cpu_model(),
              "cpus": os.cpu_count(),
              "to_image": {name: {"median": medians(rows), "runs": rows} for name, rows in runs.items()}}
    if args.baseline_src is not None:
        result["baseline_src"] = str(args.baseline_src)
    if args.floor:
        result["floor"] = floor(big, args.out, args.floor_size, args.floor_max_side, args.repeat)
    if args.seams:
        result["seams"] = seams(args.photo)
    result["load_avg_at_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    text = json.dumps(result, indent=1)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
