#!/usr/bin/env python
"""How well a run fits its own training photos, against photos it never saw, under the training protocol.

For every kept snapshot of RUN_DIR (``step-*.safetensors``, and the ``.ema`` averages), for bilinear, and for any
``--models`` given, the mean per-pixel cosine between the 2× output for the square low-res view and the backbone's
features of the full high-res view (the "full" loss's pair), at each of the run's grid scales. The views and
targets are the run's own cached ones (``wrcup train --cache-targets``): the training photos cost no backbone pass,
and a held-out set's targets are computed once into the same cache.

The gap between a set of training photos and a held-out set separates what more training could still gain on
seen photos (under-fitting) from what does not carry over to unseen ones (over-fitting to the pool).

    python scripts/train_fit.py RUN_DIR --set train=TRAIN_DIR:4 --set heldout=VAL_DIR \
        --models wrc-dinov2-s14-imgfocus --cache CACHE --out train-fit.json

Results accumulate in OUT (JSON, rewritten atomically after each set and scale; an interrupted run resumes).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learning_curve import line_label, parse_set, recorded_path, snapshots  # noqa: E402


def fit_cosines(upsamplers: dict, backbone, source, indices) -> dict:
    """For each entry of ``upsamplers`` (name → module, or None for bilinear): the mean over ``indices`` of the
    per-pixel mean cosine between its output for each cached low-res view and that view's full-view target.
    Each cache entry is read once for all of them."""
    import torch
    import torch.nn.functional as F

    totals = dict.fromkeys(upsamplers, 0.0)
    for i in indices:
        low, z_low, _, _, z_high = source.batch([i], step=0)
        image = backbone.normalise(low)
        with torch.inference_mode():
            for name, upsampler in upsamplers.items():
                if upsampler is None:
                    pred = F.interpolate(z_low, scale_factor=2, mode="bilinear", align_corners=False)
                else:
                    pred = upsampler(image, z_low)
                totals[name] += F.cosine_similarity(pred.float(), z_high, dim=1).mean().item()
    return {name: total / len(indices) for name, total in totals.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="a wrcup train run folder (its last.json gives views and scales)")
    p.add_argument("--set", dest="sets", type=parse_set, action="append", required=True,
                   help="NAME=FOLDER[:EVERY], repeatable")
    p.add_argument("--models", nargs="*", default=[], help="further checkpoints (names or files) to score")
    p.add_argument("--cache", type=Path, required=True, help="target cache folder (the run's --cache-targets)")
    p.add_argument("--out", type=Path, required=True, help="JSON result (resumed if it exists)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--data-root", type=Path, default=None,
                   help="record set folders under this root as $DATA/... (results then name no local path)")
    args = p.parse_args(argv)

    import torch

    import wrcup
    from wrcup._io import atomic_path
    from wrcup.train.config import TrainConfig
    from wrcup.train.targets import ImagePool, TargetSource

    if args.threads:
        torch.set_num_threads(args.threads)
    summary = args.run_dir / "last.json"
    if not summary.is_file():
        raise SystemExit(f"error: {summary} not found (RUN_DIR must be a wrcup train run folder)")
    config = json.loads(summary.read_text())["config"]
    jobs = [("bilinear", None, None, None)]
    jobs += [(line_label("learned", weights), step, weights, path) for step, weights, path in snapshots(args.run_dir)]
    jobs += [(str(m), None, None, m) for m in args.models]

    result = json.loads(args.out.read_text()) if args.out.exists() else {"run": args.run_dir.name, "cells": []}
    done = {(c["model"], c["step"], c["set"], c["scale"]) for c in result["cells"]}
    result["sets"] = {name: {"folder": recorded_path(folder, args.data_root), "every": every}
                      for name, folder, every in args.sets}

    def save() -> None:
        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps(result, indent=1) + "\n")

    loaded = {}

    def bundle(path):
        if path not in loaded:
            loaded[path] = wrcup.load(path, device="cpu")
            if loaded[path].metadata.get("backbone") != config["backbone"]:
                raise SystemExit(f"error: {path} upsamples {loaded[path].metadata.get('backbone')!r} features, "
                                 f"the run's backbone is {config['backbone']!r}")
        return loaded[path]

    # the targets come from the run's own views; the full-view target is needed whatever the run's losses were
    cfg = TrainConfig.from_dict(config | {"cache_targets": str(args.cache),
                                          "loss_weights": config["loss_weights"] | {"full": 1.0}})
    backbone = bundle(jobs[1][3] if len(jobs) > 1 else wrcup.DEFAULT_CHECKPOINT).backbone
    for name, folder, every in args.sets:
        pool = ImagePool([folder])
        indices = list(range(0, len(pool), every))
        result["sets"][name]["num_images"] = len(indices)
        for high_res in cfg.scales():
            scale = f"{high_res // 2}->{high_res}"
            todo = [job for job in jobs if (job[0], job[1], name, scale) not in done]
            if not todo:
                continue
            source = TargetSource(pool, backbone, cfg, "cpu", high_res=high_res)
            source.fill_cache(indices, show_progress=sys.stderr.isatty())
            cosines = fit_cosines({job: None if job[3] is None else bundle(job[3]).upsampler for job in todo},
                                  backbone, source, indices)
            for (model, step, weights, _), cosine in cosines.items():
                result["cells"].append({"model": model, "step": step, "weights": weights, "set": name,
                                        "scale": scale, "cosine": round(cosine, 6), "num_images": len(indices)})
                print(f"{model:27s} step {step!s:>6} {name:8s} {scale}: cosine {cosine:.4f}", flush=True)
            save()
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
