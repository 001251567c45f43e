"""Fidelity of features at 2×, 4×, 8× (and 3×) the backbone grid: the shipped upsampler's any-size path vs bilinear.

Protocol (the one of ``wrcup eval fidelity``, extended to other factors): each image is resized so that its shorter
side is ``--size`` (sides multiples of the patch), giving the backbone grid h×w. For a factor s the target is the
backbone's own features of the same image resized to exactly s·(p·h) × s·(p·w), i.e. an s·h × s·w grid. Each route
predicts s·h × s·w features from the size-``--size`` input; mean per-pixel cosine and NMSE
(:func:`wrcup.eval.fidelity.feature_fidelity`), averaged over images. Backbone features (inputs and targets) are
computed once into a float16 cache (``--cache``), as in ``wrcup eval``; a rerun reads them back.

Routes:
    bilinear                the backbone features resized bilinearly (align_corners=False);
    learned                 what ``model(images, output_size=…)`` does: the fewest 2× passes of the trained
                            upsampler that reach the size (pass i guided by the same image at patch p/2^i), then an
                            antialiased bilinear resize to the exact size (only for factors that are not 2^n);
    learned-1pass+bilinear  (s > 2) one trained pass, then bilinear to the target: is repeating the pass worth it?
    learned-under+bilinear  (s not a power of 2) the passes that stay below the target, then bilinear UP;
    learned-no-antialias    (s not a power of 2) like ``learned`` but the final shrink without antialiasing;
    learned-patch-p-guide   (--variants, s > 2) pass i guided by the input image resized ×2^i at the trained patch p;
    learned-bilinear-norm   ``learned`` with output_norm="bilinear" in every pass (:mod:`wrcup.models.output_norm`);
    learned-1pass+guided    (s > 2) one trained pass, then :func:`wrcup.ops.guided_upsample` guided by the image
                            (the last step of ``--to-image --final-step guided``; compare learned-1pass+bilinear);
    learned-2pass+bilinear / learned-2pass+guided   (s > 4) the same after two passes.

    python benchmarks/output_size.py $DATA/davis2016-dev/JPEGImages/480p --every 20 --scales 2,4,8 \
        --out benchmarks/results/output_size_v2.json
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F

from _common import cpu_model  # noqa: E402
from wrcup.models.names import DEFAULT_CHECKPOINT

REPO = Path(__file__).resolve().parents[1]


def _scales(text: str) -> list[int]:
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--scales must be comma-separated ints, got {text!r}") from None
    if not values or any(v < 2 or v > 16 for v in values):
        raise argparse.ArgumentTypeError(f"--scales must be factors from 2 to 16, got {text!r}")
    return values


def _patch_p_guided(upsampler, image01, backbone, features, passes: int, size):
    """Pass i guided by the [0, 1] input image resized ×2^i (bilinear), at the trained patch size."""
    x = features
    for i in range(passes):
        img = image01 if i == 0 else F.interpolate(image01, scale_factor=2**i, mode="bilinear", align_corners=False)
        quarter = upsampler.image_branch.quarter_map(backbone.normalise(img.clamp(0, 1)))
        x = upsampler.upsample_features(x, quarter, float(upsampler.patch_size))
    from wrcup.models.sizing import resize_features

    return resize_features(x, size)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("images", nargs="+", help="image files or folders (searched recursively; sorted)")
    ap.add_argument("--every", type=int, default=10, help="use every k-th image of the sorted list (default 10)")
    ap.add_argument("--limit", type=int, default=None, help="at most this many images (spread evenly)")
    ap.add_argument("--size", type=int, default=224, help="input shorter side (default 224)")
    ap.add_argument("--scales", type=_scales, default=[2, 4], help="factors of the backbone grid (default 2,4)")
    ap.add_argument("--model", default=DEFAULT_CHECKPOINT, help="bundle for wrcup.load (default: %(default)s)")
    ap.add_argument("--variants", action="store_true", help="also the patch-p guidance route (s > 2)")
    ap.add_argument("--cache", default=None, help="backbone feature cache (default $WRCUP_CACHE/features)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "output_size.json"))
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    import wrcup
    from wrcup._io import write_json
    from wrcup.backbones.cache import cache_dir
    from wrcup.data.images import load_image
    from wrcup.eval.cli import _image_list
    from wrcup.eval.extract import FeatureExtractor, file_key, resize_to_grid
    from wrcup.eval.fidelity import feature_fidelity
    from wrcup.models import upsample
    from wrcup.models.bundle import upsample_to_size
    from wrcup.models.output_norm import with_output_norm
    from wrcup.models.sizing import plan_passes, resize_features
    from wrcup.ops import guided_upsample

    paths = _image_list(args.images, args.every)
    if args.limit is not None and len(paths) > args.limit:
        paths = [paths[round(i * (len(paths) - 1) / max(1, args.limit - 1))] for i in range(args.limit)]
    if not paths:
        print("error: no images", file=sys.stderr)
        return 2
    model = wrcup.load(args.model)
    backbone, up = model.backbone, model.upsampler
    normed_up = with_output_norm(up, "bilinear")
    patch = backbone.patch_size
    extractor = FeatureExtractor(backbone, up, "learned", cache_dir=args.cache or cache_dir() / "features")

    def cached_features(images, key):
        """(features, seconds spent in the backbone or None when read from the cache)."""
        hit = extractor.cache_file(key, images.shape[-2:]).exists()
        t0 = time.perf_counter()
        feats = extractor.low_res(images, [key]).float()
        return feats, (None if hit else time.perf_counter() - t0)

    # images are recorded relative to their common folder: results name no path of this machine
    common = os.path.commonpath([str(Path(q).parent) for q in paths]) if paths else ""
    per_image, backbone_seconds, route_seconds = [], {}, {}
    t_start = time.perf_counter()
    with torch.inference_mode():
        for n_done, path in enumerate(paths, 1):
            image = load_image(path)
            low_in = resize_to_grid(image, args.size, patch)[None]
            H, W = low_in.shape[-2:]
            key = file_key(path)
            low, _ = cached_features(low_in, key)
            norm = backbone.normalise(low_in)
            record = {"image": os.path.relpath(path, common), "input": [H, W], "grid": list(low.shape[-2:])}
            for s in args.scales:
                high_in = F.interpolate(image[None], size=(s * H, s * W), mode="bilinear", antialias=True,
                                        align_corners=False).clamp(0, 1)
                target, seconds = cached_features(high_in, key)
                if seconds is not None:
                    backbone_seconds.setdefault(s, []).append(seconds)
                size = tuple(target.shape[-2:])
                passes = plan_passes(low.shape[-2:], size)
                routes = {
                    "bilinear": lambda: F.interpolate(low, size=size, mode="bilinear", align_corners=False),
                    "learned": lambda: upsample_to_size(up, norm, low, size),
                    "learned-bilinear-norm": lambda: upsample_to_size(normed_up, norm, low, size),
                }
                if s > 2 and not (2**passes != s and passes == 2):   # (for 3× that is the "under" route)
                    routes["learned-1pass+bilinear"] = lambda: resize_features(up(norm, low), size)
                if s > 2:
                    routes["learned-1pass+guided"] = lambda: guided_upsample(up(norm, low), image[None], size)
                if s > 4:
                    routes["learned-2pass+bilinear"] = lambda: resize_features(upsample(norm, low, [up] * 2), size)
                    routes["learned-2pass+guided"] = lambda: guided_upsample(upsample(norm, low, [up] * 2),
                                                                             image[None], size)
                if 2**passes != s:
                    routes["learned-under+bilinear"] = lambda: resize_features(
                        upsample(norm, low, [up] * (passes - 1)) if passes > 1 else low, size)
                    routes["learned-no-antialias"] = lambda: F.interpolate(
                        upsample(norm, low, [up] * passes), size=size, mode="bilinear", align_corners=False)
                if args.variants and s > 2:
                    routes["learned-patch-p-guide"] = lambda: _patch_p_guided(up, low_in, backbone, low, passes, size)
                scores = {}
                for name, route in routes.items():
                    t0 = time.perf_counter()
                    pred = route()
                    route_seconds.setdefault((s, name), []).append(time.perf_counter() - t0)
                    scores[name] = feature_fidelity(pred, target)
                record[f"x{s}"] = scores
            per_image.append(record)
            if not args.quiet:
                line = "  ".join(f"x{s}: " + " ".join(f"{k}={v['cosine']:.4f}" for k, v in record[f"x{s}"].items())
                                 for s in args.scales)
                print(f"[{n_done}/{len(paths)}] {Path(path).parent.name}/{Path(path).name}  {line}", flush=True)
    wall = time.perf_counter() - t_start

    summary = {}
    for s in args.scales:
        rows = [r[f"x{s}"] for r in per_image]
        summary[f"x{s}"] = {}
        for name in rows[0]:
            summary[f"x{s}"][name] = {
                **{m: statistics.fmean(r[name][m] for r in rows) for m in ("cosine", "nmse", "nmse_global", "mse", "norm_ratio")},
                "beats_bilinear": sum(r[name]["cosine"] > r["bilinear"]["cosine"] for r in rows),
                "seconds_per_image": statistics.median(route_seconds[(s, name)]),
            }
    result = {
        "protocol": f"input shorter side {args.size} (grid h×w); target: backbone features of the image resized to "
                    "exactly s·(p·h)×s·(p·w); mean per-pixel cosine / NMSE averaged over images",
        "model": args.model, "images": len(per_image), "every": args.every, "limit": args.limit,
        "sources": sorted({str(Path(r["image"]).parent.name) for r in per_image}),
        "machine": cpu_model(), "threads": args.threads, "date": str(date.today()), "torch": torch.__version__,
        "wall_seconds": wall,
        "backbone_seconds_per_image": {f"x{s}": statistics.median(v) for s, v in backbone_seconds.items()},
        "summary": summary, "per_image": per_image,
    }
    write_json(args.out, result)
    print(f"\n{len(per_image)} images, {wall:.0f} s; backbone s/img (uncached): "
          + ", ".join(f"{args.size * s} short side {statistics.median(v):.1f}" for s, v in backbone_seconds.items()))
    print("| factor | route | cosine ↑ | NMSE ↓ | beats bilinear | s/img |\n|---|---|---:|---:|---:|---:|")
    for s in args.scales:
        for name, v in summary[f"x{s}"].items():
            print(f"| {s}× | {name} | {v['cosine']:.4f} | {v['nmse']:.3f} | {v['beats_bilinear']}/{len(per_image)} "
                  f"| {v['seconds_per_image']:.2f} |")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
