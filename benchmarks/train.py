"""Training throughput: steps per second of the shipped recipe and where a step's time goes, old step vs fast step.

The recipe of scripts/reproduce_checkpoint.sh (wrc-reference, residual, batch 4, crops 4, losses local +
consistency + full, targets cached on disk) on real photos, run through the trainer's own ``train_step`` with
``fast=False`` (the original step) and ``fast=True``, interleaved (current, fast, current, fast, …) from the same
initial weights on the same batches; a third variant is the fast step with its two passes run one after the
other (what the overlap adds). Each step is split into phases: ``data`` (cached targets read from disk),
``augment`` (photometric augmentation and normalisation of the guidance images), ``forward`` (the two upsampler
passes), ``loss``, ``backward``, ``optimizer`` (zero_grad, AdamW, scheduler); when the passes overlap, augment,
forward, loss and backward run together in two threads and are all counted as ``forward``. The backbone does
not run in a cached step (its cost per batch in online mode is measured apart, ``--online``). Both wall-clock and process CPU
time are recorded: on a shared machine CPU time is the steadier of the two.

    python benchmarks/train.py [--threads 2] [--repeats 5] [--scales 448,896] [--online] [--compile]
    python benchmarks/train.py --quick --out /tmp/train.json      # tiny smoke run (tests/benchmarks)

Writes ``benchmarks/results/train.json`` (full run) and prints Markdown tables. The targets are cached once in
``$WRCUP_CACHE/bench-train-targets`` (the real backbone, ~1 min per scale for 8 photos), so a rerun only trains.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import cpu_model  # noqa: E402  (benchmarks/ is the script's folder)

# Sleeping rather than spinning OpenMP workers (see benchmarks/ops.py); must precede torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO.parent / "shared" / "data" / "imagenet-sample"
PHASES = ("data", "augment", "forward", "loss", "backward", "optimizer")
RECIPE = dict(operator="wrc-reference", residual=True, batch_size=4, lr=1e-3, warmup=50, crops=4, steps=1400,
              loss_weights={"local": 1.0, "global": 0.0, "consistency": 1.0, "full": 1.0})
QUICK = dict(batch_size=2, crops=2)


def _photo_folder(root: Path, count: int) -> Path:
    """A folder of links to the first ``count`` training photos (every 20th sorted photo is held out, as in
    scripts/reproduce_checkpoint.sh), or the repository's examples."""
    photos = sorted(PHOTOS.glob("*.JPEG")) if PHOTOS.is_dir() else []
    photos = [p for i, p in enumerate(photos) if i % 20] or sorted((REPO / "examples").glob("*.jpg"))
    folder = root / f"photos-{count}"
    folder.mkdir(parents=True, exist_ok=True)
    for p in photos[:count]:
        link = folder / p.name
        if not link.exists():
            link.symlink_to(p.resolve())
    return folder


class PhaseClock:
    """``mark(phase)`` adds the wall and CPU time since the previous mark to ``phase``."""

    def __init__(self):
        self.wall = dict.fromkeys(PHASES, 0.0)
        self.cpu = dict.fromkeys(PHASES, 0.0)
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def mark(self, phase: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self.wall[phase] += wall - self._wall
        self.cpu[phase] += cpu - self._cpu
        self._wall, self._cpu = wall, cpu


def _summary(clocks: list[PhaseClock]) -> dict:
    med = statistics.median
    out = {"wall_ms": {p: med(c.wall[p] for c in clocks) * 1e3 for p in PHASES},
           "cpu_ms": {p: med(c.cpu[p] for c in clocks) * 1e3 for p in PHASES}}
    out["step_wall_ms"] = med(sum(c.wall.values()) for c in clocks) * 1e3
    out["step_cpu_ms"] = med(sum(c.cpu.values()) for c in clocks) * 1e3
    out["steps_per_s"] = 1e3 / out["step_wall_ms"]
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5, help="timed steps per variant (after --warmup)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps per variant first")
    ap.add_argument("--images", type=int, default=8, help="training photos cycled through")
    ap.add_argument("--scales", default="448", help="high-res view sizes; the first is compared old vs fast, every "
                                                     "one is timed with the fast step (its cost per step)")
    ap.add_argument("--online", action="store_true", help="also time the backbone passes one uncached batch needs")
    ap.add_argument("--compile", action="store_true", help="also time the fast step with torch.compile(model)")
    ap.add_argument("--bf16", action="store_true", help="also time the fast step under bfloat16 autocast (precision "
                    "bfloat16; pays on CPUs with bfloat16 matrix units such as Intel AMX)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (112 view, batch 2, 2 photos), 1 repeat")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/train.json; none with --quick)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from wrcup import backbones
    from wrcup.train.trainer import (LOSS_NAMES, ImagePool, TargetSource, TrainConfig, batch_indices,
                                     build_model, build_optimizer, lr_factor, train_step)

    scales = [int(s) for s in args.scales.split(",")]
    recipe = dict(RECIPE)
    if args.quick:
        recipe.update(QUICK)
        scales, args.repeats, args.warmup, args.images = [112], 1, 1, 2
    cache_root = Path(os.environ.get("WRCUP_CACHE", Path.home() / ".cache" / "wrcup"))
    work = Path(tempfile.mkdtemp(prefix="wrcup-bench-train-")) if args.quick else cache_root / "bench-train-targets"
    photos = _photo_folder(work, args.images)
    backbone = backbones.load("dinov2-s14-imgfocus")
    images = ImagePool([str(photos)])
    load_start = os.getloadavg()[0]

    def config(high_res: int, fast: bool, precision: str = "auto") -> TrainConfig:
        return TrainConfig(data=[str(photos)], out=str(work / "run"), high_res=high_res, cache_targets=str(work),
                           fast=fast, precision=precision, progress=False, **recipe)

    sources = {}
    for size in scales:
        sources[size] = TargetSource(images, backbone, config(size, True), torch.device("cpu"))
        t0 = time.perf_counter()
        sources[size].fill_cache(list(range(len(images))), show_progress=not args.quick)
        print(f"targets at {size}: ready in {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    def variant(name: str, high_res: int, fast: bool, compile_model: bool = False, overlap: bool | None = None,
                precision: str = "auto"):
        cfg = config(high_res, fast, precision)
        torch.manual_seed(0)  # the same initial weights for every variant
        model = build_model(cfg, backbone, torch.device("cpu")).train()
        optimizer = build_optimizer(cfg, model)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
        net = torch.compile(model) if compile_model else model
        return {"name": name, "cfg": cfg, "net": net, "optimizer": optimizer, "scheduler": scheduler, "overlap": overlap,
                "targets": sources[high_res], "clocks": [], "losses": [], "first_step_s": None}

    first = scales[0]
    variants = [variant("current", first, False), variant("fast", first, True),
                variant("fast, passes not overlapped", first, True, overlap=False)]
    if args.bf16:
        variants.append(variant("fast+bf16", first, True, precision="bfloat16"))
        variants.append(variant("fast+bf16, passes not overlapped", first, True, overlap=False, precision="bfloat16"))
    if args.compile:
        variants.append(variant("fast+compile", first, True, compile_model=True, overlap=False))
    variants += [variant(f"fast@{size}", size, True) for size in scales[1:]]
    if args.bf16:
        variants += [variant(f"fast+bf16@{size}", size, True, precision="bfloat16") for size in scales[1:]]

    # interleaved: every variant runs step r before any runs step r + 1
    for r in range(args.warmup + args.repeats):
        idx = batch_indices(len(images), recipe["batch_size"], r, 0)
        for v in variants:
            clock = PhaseClock()
            t0 = time.perf_counter()
            parts = train_step(v["net"], backbone, v["targets"], v["optimizer"], v["scheduler"], v["cfg"], r, idx,
                               0, recipe["batch_size"], mark=clock.mark, overlap=v["overlap"])
            if r == 0:
                v["first_step_s"] = time.perf_counter() - t0
            v["losses"].append(float(sum(v["cfg"].loss_weights.get(k, 0.0) * float(p) for k, p in zip(LOSS_NAMES, parts))))
            if r >= args.warmup:
                v["clocks"].append(clock)

    online = None
    if args.online:
        src = TargetSource(images, backbone, TrainConfig(**{**config(first, True).__dict__, "cache_targets": None}),
                           torch.device("cpu"))
        idx = batch_indices(len(images), recipe["batch_size"], 0, 0)
        times = []
        for r in range(max(1, min(args.repeats, 3))):
            t0 = time.perf_counter()
            src.batch(idx, r)
            times.append((time.perf_counter() - t0) * 1e3)
        online = {"high_res": first, "batch": recipe["batch_size"], "wall_ms": statistics.median(times)}

    rows = []
    for v in variants:
        rows.append({"variant": v["name"], "high_res": v["cfg"].high_res, "fast": v["cfg"].fast,
                     "precision": v["cfg"].precision,
                     "first_step_s": v["first_step_s"], "losses": v["losses"], **_summary(v["clocks"])})
    by_name = {r["variant"]: r for r in rows}
    clocks = {v["name"]: v["clocks"] for v in variants}

    def speedup(slow: str, quick: str) -> dict:
        """How much faster variant ``quick`` ran than ``slow``: ratios of the medians and medians of paired steps."""
        a, b = by_name[slow], by_name[quick]
        pairs = list(zip(clocks[slow], clocks[quick]))

        def paired(kind: str) -> float:
            return statistics.median(sum(getattr(x, kind).values()) / sum(getattr(y, kind).values()) for x, y in pairs)

        return {"wall": a["step_wall_ms"] / b["step_wall_ms"], "cpu": a["step_cpu_ms"] / b["step_cpu_ms"],
                "wall_pairwise_median": paired("wall"), "cpu_pairwise_median": paired("cpu")}

    ratios = speedup("current", "fast")
    bf16_ratios = None
    if "fast+bf16" in by_name:
        bf16_ratios = {**speedup("current", "fast+bf16"),
                       "fast_over_fast_bf16_wall": speedup("fast", "fast+bf16")["wall"]}
    result = {
        "machine": cpu_model(), "threads": args.threads, "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "torch": torch.__version__, "load_average": {"start": load_start, "end": os.getloadavg()[0]},
        "quick": args.quick, "repeats": args.repeats, "warmup": args.warmup, "images": len(images),
        "recipe": {**recipe, "high_res": scales}, "rows": rows, "speedup_current_over_fast": ratios,
        "speedup_current_over_fast_bf16": bf16_ratios,
        "online_backbone_per_batch": online,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if args.quick:
        shutil.rmtree(work, ignore_errors=True)
    out = args.out or (None if args.quick else str(REPO / "benchmarks" / "results" / "train.json"))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2) + "\n")

    print(f"machine: {result['machine']}, threads {args.threads}, {result['date']}, load average "
          f"{load_start:.1f} → {result['load_average']['end']:.1f}; median of {args.repeats} steps, interleaved\n")
    print("| variant | view | step wall ms | steps/s | step CPU ms | " + " | ".join(f"{p} (CPU ms)" for p in PHASES) + " |")
    print("|---|---:|---:|---:|---:|" + "---:|" * len(PHASES))
    for r in rows:
        print(f"| {r['variant']} | {r['high_res']} | {r['step_wall_ms']:.0f} | {r['steps_per_s']:.2f} | "
              f"{r['step_cpu_ms']:.0f} | " + " | ".join(f"{r['cpu_ms'][p]:.0f}" for p in PHASES) + " |")
    print(f"\ncurrent / fast: {ratios['wall']:.2f}× wall, {ratios['cpu']:.2f}× CPU (medians); pairwise "
          f"{ratios['wall_pairwise_median']:.2f}× wall, {ratios['cpu_pairwise_median']:.2f}× CPU")
    if bf16_ratios:
        print(f"current / fast+bf16: {bf16_ratios['wall']:.2f}× wall, {bf16_ratios['cpu']:.2f}× CPU (medians); "
              f"pairwise {bf16_ratios['wall_pairwise_median']:.2f}× wall; fast / fast+bf16 "
              f"{bf16_ratios['fast_over_fast_bf16_wall']:.2f}× wall")
    if online:
        print(f"online mode: the backbone targets of one batch of {online['batch']} at {first} take "
              f"{online['wall_ms']:.0f} ms (not part of a cached step)")
    return result


if __name__ == "__main__":
    main()
