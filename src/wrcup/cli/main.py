"""The ``wrcup`` command line: ``upsample`` (the main job), ``train``, ``eval``, ``info``."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _point(text: str) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--point must be 'x,y' in pixels, got {text!r}") from None
    return x, y


def _add_upsample(sub) -> None:
    p = sub.add_parser("upsample", help="upsample the backbone features of images; write features and pictures",
                       description="For each image: backbone features, upsampled features (safetensors) and a PNG "
                                   "with the photo, low-res and upsampled feature PCA and a similarity map.")
    p.add_argument("images", nargs="+", help="image files (jpg, png, webp, …)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--model", default="wrc-dinov2-s14-imgfocus", help="shipped checkpoint name or .safetensors path")
    p.add_argument("--backbone-weights", default=None, help="local backbone weights (offline, non-embedded backbones)")
    p.add_argument("--size", type=int, default=448, help="shorter image side fed to the backbone (default 448)")
    p.add_argument("--point", type=_point, default=None, help="query point 'x,y' in pixels of the original image "
                                                              "for the similarity map (default: the centre)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, … (default: cuda if available)")
    p.add_argument("--no-figure", action="store_true", help="write features only")
    p.set_defaults(func=_run_upsample)


def _run_upsample(args) -> int:
    import torch
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    import wrcup
    from wrcup._io import atomic_path
    from wrcup.data.images import ImageReadError, load_image, resize_short_side
    from wrcup.viz import save_comparison_figure

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.size < 1:
        print(f"error: --size must be a positive number of pixels, got {args.size}", file=sys.stderr)
        return 2
    model = wrcup.load(args.model, device=device, backbone_weights=args.backbone_weights)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failures = []
    for path in tqdm(args.images, desc="upsample", unit="img", disable=len(args.images) < 2):
        try:
            image = load_image(path)
        except (ImageReadError, FileNotFoundError, OSError) as err:
            failures.append(path)
            tqdm.write(f"skipped {path}: {err}", file=sys.stderr)
            continue
        H0, W0 = image.shape[-2:]
        x = model.backbone.prepare(resize_short_side(image[None], args.size).clamp(0, 1).to(device))
        with torch.inference_mode():
            high, low = model(x, return_low_res=True)
        H, W = x.shape[-2:]
        px, py = args.point if args.point is not None else (W0 / 2, H0 / 2)
        if not (0 <= px < W0 and 0 <= py < H0):
            failures.append(path)
            tqdm.write(f"skipped {path}: --point {px},{py} is outside the image ({W0}×{H0})", file=sys.stderr)
            continue
        point = (px * W / W0, py * H / H0)
        stem = Path(path).stem
        with atomic_path(out / f"{stem}.safetensors") as tmp:
            save_file({"features": high[0].float().cpu().contiguous(), "low_res": low[0].float().cpu().contiguous()},
                      str(tmp), metadata={"image": str(path), "input_size": f"{H}x{W}",
                                          "model": json.dumps(model.metadata.get("name", args.model))})
        if not args.no_figure:
            save_comparison_figure(out / f"{stem}.png", x[0].cpu(), low[0].cpu(), high[0].cpu(), point,
                                   title=f"{Path(path).name} — {args.model}")
    done = len(args.images) - len(failures)
    print(f"wrote {done} of {len(args.images)} image(s) to {out}" + (f"; failed: {', '.join(failures)}" if failures else ""))
    return 1 if failures else 0


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--high-res must be a size or comma-separated sizes like 448,896, "
                                         f"got {text!r}") from None
    if not sizes:
        raise argparse.ArgumentTypeError(f"--high-res needs at least one size, got {text!r}")
    return sizes


def _scale_mix(text: str) -> dict[int, float]:
    try:
        pairs = [item.split(":") for item in text.split(",") if item.strip()]
        mix = {int(size): float(weight) for size, weight in pairs}
    except ValueError:
        raise argparse.ArgumentTypeError(f"--scale-mix must be SIZE:WEIGHT pairs like 448:3,896:1, got {text!r}") from None
    if not mix or len(mix) != len(pairs):
        raise argparse.ArgumentTypeError(f"--scale-mix must name each size once, got {text!r}")
    return mix


def _add_train(sub) -> None:
    from wrcup.train.trainer import TrainConfig

    d = TrainConfig(data=[], out="")
    p = sub.add_parser("train", help="train an upsampler self-supervised against a frozen backbone",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Self-supervised training (spec §4). Multi-GPU: torchrun --nproc_per_node N -m wrcup.cli.main train …")
    p.add_argument("--data", nargs="+", required=True, help="image folders (searched recursively)")
    p.add_argument("--out", required=True, help="run folder: checkpoints, log.csv, summary.json")
    p.add_argument("--backbone", default=d.backbone, help="frozen backbone (wrcup info lists them)")
    p.add_argument("--backbone-weights", default=None, help="local backbone weights file (offline)")
    p.add_argument("--operator", default=d.operator, help="upsampling operator (wrcup info lists them)")
    p.add_argument("--residual", action="store_true", help="add the bilinear upsampling of the input features to the output")
    p.add_argument("--steps", type=int, default=d.steps, help="optimiser steps of the whole run (the schedule's length)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch per optimiser step")
    p.add_argument("--grad-accum", type=int, default=d.grad_accum, help="micro-batches per step and process")
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (AdamW)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW weight decay")
    p.add_argument("--warmup", type=int, default=d.warmup, help="linear warm-up steps")
    p.add_argument("--schedule", choices=("cosine", "constant"), default=d.schedule, help="learning-rate schedule after warm-up")
    p.add_argument("--high-res", type=_sizes, default=str(d.high_res), metavar="SIZE[,SIZE…]",
                   help="high-res view side in pixels (the low-res view is half of it); several sizes train on "
                        "several grid scales, e.g. 448,896 for the 16→32 and 32→64 token grids of a patch-14 "
                        "backbone, one scale per step")
    p.add_argument("--scale-mix", type=_scale_mix, default=None, metavar="SIZE:WEIGHT,…",
                   help="relative frequency of each training scale, e.g. 448:3,896:1 (a 896 step costs about "
                        "4× a 448 step); each step's scale is drawn from (seed, step); sizes named here join "
                        "--high-res. None: equal frequencies")
    p.add_argument("--crops", type=int, default=d.crops, help="aligned crops per image for the local loss")
    p.add_argument("--losses", default="local,global,consistency",
                   help="comma-separated subset of local,global,consistency,full (spec §4: the first three; "
                        "full = against the backbone features of the whole high-res view)")
    p.add_argument("--no-augment", action="store_true", help="no photometric augmentation for the consistency loss")
    p.add_argument("--cache-targets", default=None, help="folder caching backbone targets for fixed crops (fast on CPU)")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="steps between resumable checkpoints (0: only at the end)")
    p.add_argument("--keep-every", type=int, default=d.keep_every,
                   help="also keep a weights + metadata snapshot step-NNNNNN.safetensors every N steps, e.g. for a "
                        "learning curve (0: none)")
    p.add_argument("--seed", type=int, default=d.seed, help="initialisation, batches, crops, augmentations")
    p.add_argument("--device", default=None, help="cpu, cuda, …; None: cuda if available")
    p.add_argument("--name", default=d.name, help="file name of the final checkpoint")
    p.add_argument("--no-fast", action="store_true",
                   help="use the original training step instead of the faster one (same losses and update, other "
                        "floating-point rounding; see benchmarks/train.py)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--stop-at", type=int, default=None, help="stop after this many steps with a resumable checkpoint")
    p.set_defaults(func=_run_train)


def _run_train(args) -> int:
    import torch

    from wrcup.train.trainer import LOSS_NAMES, TrainConfig, train

    chosen = [s.strip() for s in args.losses.split(",") if s.strip()]
    bad = sorted(set(chosen) - set(LOSS_NAMES))
    if bad:
        print(f"error: --losses has unknown names {bad}; choose from {','.join(LOSS_NAMES)}", file=sys.stderr)
        return 2
    sizes = list(args.high_res)
    if args.scale_mix:
        sizes += [size for size in args.scale_mix if size not in sizes]
        missing = [size for size in sizes if size not in args.scale_mix]
        if missing:
            print(f"error: --scale-mix gives no weight for --high-res size(s) {missing}", file=sys.stderr)
            return 2
    cfg = TrainConfig(
        data=args.data, out=args.out, backbone=args.backbone, backbone_weights=args.backbone_weights,
        operator=args.operator, residual=args.residual, steps=args.steps, batch_size=args.batch_size,
        grad_accum=args.grad_accum, lr=args.lr, weight_decay=args.weight_decay, warmup=args.warmup,
        schedule=args.schedule, high_res=sizes[0] if len(sizes) == 1 else sizes,
        scale_mix=[args.scale_mix[size] for size in sizes] if args.scale_mix and len(sizes) > 1 else None,
        crops=args.crops, loss_weights={k: (1.0 if k in chosen else 0.0) for k in LOSS_NAMES},
        augment=not args.no_augment, cache_targets=args.cache_targets, checkpoint_every=args.checkpoint_every,
        keep_every=args.keep_every, seed=args.seed,
        device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"), name=args.name, fast=not args.no_fast)
    summary = train(cfg, resume=args.resume, stop_at=args.stop_at)
    print(json.dumps(summary, indent=2))
    return 0


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="list backbones, operators and shipped checkpoints")
    p.set_defaults(func=_run_info)


def _run_info(args) -> int:
    from wrcup import backbones, nn
    from wrcup.models.bundle import SHIPPED_CHECKPOINTS

    print("backbones:   " + ", ".join(backbones.list_backbones()))
    print("operators:   " + ", ".join(nn.list_operators()))
    print("checkpoints: " + ", ".join(sorted(SHIPPED_CHECKPOINTS)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from wrcup import __version__

    parser = argparse.ArgumentParser(prog="wrcup", description="Weighted Reverse Convolution feature upsamplers.")
    parser.add_argument("--version", action="version", version=f"wrcup {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_upsample(sub)
    _add_train(sub)
    try:
        from wrcup.eval.cli import add_eval_parser
    except ImportError:
        pass
    else:
        add_eval_parser(sub)
    _add_info(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as err:
        # user-facing errors: one clear line, no traceback (WRCUP_DEBUG=1 shows it)
        if os.environ.get("WRCUP_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
