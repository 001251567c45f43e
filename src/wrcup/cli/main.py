"""The ``wrcup`` command line: ``upsample`` (the main job), ``train``, ``eval``, ``info``."""
from __future__ import annotations

import argparse
import json
import os
import sys

from .upsample import add_parser as add_upsample_parser


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: …)" to every option with a default worth stating (not to required options, flags or
    options whose default is "not given")."""

    def _get_help_string(self, action):
        unstated = action.default is None or action.default is False  # "not given" / a flag
        if action.required or unstated or "%(default)" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _add_train(sub) -> None:
    from wrcup.backbones import list_backbones
    from wrcup.data.images import IMAGE_EXTENSIONS
    from wrcup.nn import list_operators
    from wrcup.train.trainer import LOSS_NAMES, TrainConfig

    d = TrainConfig(data=[], out="")
    p = sub.add_parser("train", help="train an upsampler self-supervised against a frozen backbone",
                       formatter_class=_DefaultsFormatter,
                       description="Self-supervised training of an upsampler against its frozen backbone (the "
                                   "losses and the data flow are described in docs/DESIGN.md). Multi-GPU: "
                                   "torchrun --nproc_per_node N -m wrcup.cli.main train …")
    p.add_argument("--data", nargs="+", required=True,
                   help=f"image folders (searched recursively for {', '.join(IMAGE_EXTENSIONS)}, any case)")
    p.add_argument("--out", required=True, help="run folder: checkpoints, log.csv, summary.json")
    p.add_argument("--backbone", default=d.backbone,
                   help=f"frozen backbone: {', '.join(list_backbones())}, or a timm ViT model name")
    p.add_argument("--backbone-weights", default=None,
                   help="local timm-format weights for the backbone (.safetensors/.pth; offline use of non-embedded "
                        "backbones; default: the embedded backbone's own, or a download)")
    p.add_argument("--operator", default=d.operator,
                   help=f"upsampling operator, one of: {', '.join(list_operators())}")
    p.add_argument("--residual", action="store_true", help="add the bilinear upsampling of the input features to the output")
    p.add_argument("--steps", type=int, default=d.steps, help="optimiser steps")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="global batch per optimiser step (all ranks together)")
    p.add_argument("--grad-accum", type=int, default=d.grad_accum,
                   help="micro-batches each optimiser step's batch is split into (gradients accumulated)")
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (AdamW)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW weight decay")
    p.add_argument("--warmup", type=int, default=d.warmup, help="steps of linear learning-rate warm-up")
    p.add_argument("--schedule", choices=("cosine", "constant"), default=d.schedule,
                   help="learning rate after the warm-up: cosine decay to 0 at --steps, or constant")
    p.add_argument("--high-res", type=int, default=d.high_res,
                   help="side of the square high-res view in pixels; the upsampler's input is the half-size view")
    p.add_argument("--crops", type=int, default=d.crops,
                   help="aligned crops per image whose backbone features are the local loss's targets")
    p.add_argument("--losses", default="local,global,consistency",
                   help=f"comma-separated subset of {','.join(LOSS_NAMES)}, each with weight 1 (the paper's recipe "
                        "uses the first three; full = against the backbone features of the whole high-res view)")
    p.add_argument("--no-augment", action="store_true",
                   help="no photometric augmentation of the consistency loss's second view (it sees the same image)")
    p.add_argument("--cache-targets", default=None,
                   help="folder caching backbone targets for fixed crops per image (fast on CPU; default: no cache, "
                        "new random crops every step)")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                   help="write a resumable checkpoint every this many steps (0: only at the end)")
    p.add_argument("--seed", type=int, default=d.seed,
                   help="seed of the batches, crops and augmentations (each step is a pure function of it)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: cuda if available, else cpu)")
    p.add_argument("--name", default=d.name, help="file name of the final checkpoint")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--stop-at", type=int, default=None,
                   help="stop after this many steps with a resumable checkpoint (default: run all --steps)")
    p.set_defaults(func=_run_train)


def _run_train(args) -> int:
    from wrcup._checks import resolve_device
    from wrcup.train.trainer import LOSS_NAMES, TrainConfig, train

    chosen = [s.strip() for s in args.losses.split(",") if s.strip()]
    bad = sorted(set(chosen) - set(LOSS_NAMES))
    if bad:
        print(f"error: --losses has unknown names {bad}; choose from {','.join(LOSS_NAMES)}", file=sys.stderr)
        return 2
    cfg = TrainConfig(
        data=args.data, out=args.out, backbone=args.backbone, backbone_weights=args.backbone_weights,
        operator=args.operator, residual=args.residual, steps=args.steps, batch_size=args.batch_size,
        grad_accum=args.grad_accum, lr=args.lr, weight_decay=args.weight_decay, warmup=args.warmup,
        schedule=args.schedule, high_res=args.high_res, crops=args.crops,
        loss_weights={k: (1.0 if k in chosen else 0.0) for k in LOSS_NAMES}, augment=not args.no_augment,
        cache_targets=args.cache_targets, checkpoint_every=args.checkpoint_every, seed=args.seed,
        device=resolve_device(args.device, "--device"), name=args.name)
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
    add_upsample_parser(sub)
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
