"""The ``wrcup`` command line: ``upsample`` (the main job), ``train``, ``eval``, ``convert``, ``export``, ``info``."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from wrcup.train.config import PER_INVOCATION_FLAGS, PRECISIONS, TRAIN_FLAG_FIELDS

from .convert import add_convert_parser
from .export import add_export_parser
from .upsample import add_parser as add_upsample_parser


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: …)" to every option with a default worth stating (not to required options, flags or
    options whose default is "not given")."""

    def _get_help_string(self, action):
        default = getattr(action.default, "value", action.default)  # train flags wrap their defaults (_Default)
        unstated = default is None or default is False  # "not given" / a flag
        if action.required or unstated or "%(default)" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class _Default:
    """A flag's default, wrapped so that ``wrcup train --resume`` can tell typed flags from untyped ones;
    prints as the value, so help texts may show ``%(default)s``."""

    def __init__(self, value):
        self.value = value

    def __str__(self) -> str:
        return str(self.value)

    def __repr__(self) -> str:
        return repr(self.value)




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
    from wrcup.backbones import list_backbones
    from wrcup.data.images import IMAGE_EXTENSIONS
    from wrcup.nn import list_operators, operator_entry
    from wrcup.train.config import LOSS_NAMES, TrainConfig

    d = TrainConfig(data=[], out="")
    p = sub.add_parser("train", help="train an upsampler self-supervised against a frozen backbone",
                       formatter_class=_DefaultsFormatter,
                       description="Self-supervised training of an upsampler against its frozen backbone (the "
                                   "losses and the data flow are described in docs/DESIGN.md). Multi-GPU: "
                                   "torchrun --nproc_per_node N -m wrcup.cli.main train …")
    p.add_argument("--data", nargs="+",
                   help=f"image folders (searched recursively for {', '.join(IMAGE_EXTENSIONS)}, any case); "
                        "required for a new run, recorded in the run for --resume")
    p.add_argument("--out", help="run folder: checkpoints, log.csv, summary.json (required for a new run)")
    p.add_argument("--backbone", default=d.backbone,
                   help=f"frozen backbone: {', '.join(list_backbones())}, or a timm ViT model name")
    p.add_argument("--backbone-weights", default=None,
                   help="local timm-format weights for the backbone (.safetensors/.pth; offline use of non-embedded "
                        "backbones; default: the embedded backbone's own, or a download)")
    p.add_argument("--operator", default=d.operator, choices=list_operators(), metavar="NAME",
                   help="upsampling operator (registered in wrcup.nn): " + "; ".join(
                       f"{name}: {operator_entry(name).summary}" for name in list_operators()))
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
    p.add_argument("--high-res", type=_sizes, default=[d.high_res], metavar="SIZE[,SIZE…]",
                   help="side of the square high-res view in pixels; the upsampler's input is the half-size view. "
                        "Several sizes train on several grid scales, one scale per step, e.g. 448,896 for the 16→32 "
                        "and 32→64 token grids of a patch-14 backbone")
    p.add_argument("--scale-mix", type=_scale_mix, default=None, metavar="SIZE:WEIGHT,…",
                   help="relative frequency of each training scale, e.g. 448:3,896:1 (a 896 step costs about 4× a "
                        "448 step); each step's scale is drawn from (seed, step); sizes named here join --high-res "
                        "(default: equal frequencies)")
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
    p.add_argument("--keep-every", type=int, default=d.keep_every,
                   help="also keep a weights + metadata snapshot step-NNNNNN.safetensors every N steps, e.g. for a "
                        "learning curve (scripts/learning_curve.py; 0: none)")
    p.add_argument("--ema", type=float, default=d.ema,
                   help="decay of an exponential moving average of the weights kept beside the run, e.g. 0.999; "
                        "snapshots and the finished run then also write NAME.ema.safetensors (0: none)")
    p.add_argument("--seed", type=int, default=d.seed,
                   help="seed of the batches, crops and augmentations (each step is a pure function of it)")
    p.add_argument("--target-seed", type=int, default=d.target_seed,
                   help="seed of the fixed crops of cached targets (--cache-targets); default: --seed. Give the first "
                        "run's seed to train another seed on the same cached targets (its initialisation, batches "
                        "and augmentations still follow --seed)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: cuda if available, else cpu)")
    p.add_argument("--name", default=d.name, help="file name of the final checkpoint")
    p.add_argument("--no-fast", action="store_true",
                   help="use the original training step instead of the faster one (same losses and update, other "
                        "floating-point rounding; see benchmarks/train.py)")
    p.add_argument("--precision", choices=PRECISIONS, default=d.precision,
                   help="auto: bfloat16 autocast on CUDA, float32 elsewhere; bfloat16: autocast on any device (on "
                        "CPU faster only with bfloat16 matrix units such as Intel AMX, see benchmarks/train.py); "
                        "float32: never")
    resume = p.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN_DIR",
                            help="continue the run in RUN_DIR (or --out) from its last checkpoint with its recorded "
                                 "settings; a flag given that differs from them is an error, except")
    p.add_argument("--stop-at", type=int, default=None,
                   help="stop after this many steps with a resumable checkpoint (default: run all --steps)")
    p.set_defaults(func=_run_train)
    from wrcup.train.config import RESUME_MAY_DIFFER

    may_change = []
    for action in p._actions:  # argparse has no public list of a parser's arguments
        if action.dest != "help":
            action.default = _Default(action.default)
        if TRAIN_FLAG_FIELDS.get(action.dest, action.dest) in RESUME_MAY_DIFFER and action.dest != "out" \
                or action.dest in PER_INVOCATION_FLAGS and action is not resume:
            may_change.append(action.option_strings[0])
    resume.help += " " + ", ".join(may_change)


def _typed_train_flags(args) -> set[str]:
    """The flags given on the command line; replaces the wrapped defaults of the others by their values."""
    typed = set()
    for dest, value in vars(args).items():
        if isinstance(value, _Default):
            setattr(args, dest, value.value)
        elif dest not in ("command", "func"):
            typed.add(dest)
    return typed


def _flag_value(dest: str, cfg):
    """What flag ``--dest`` of ``cfg`` reads on the command line."""
    from wrcup.train.config import LOSS_NAMES

    if dest == "losses":
        return ",".join(k for k in LOSS_NAMES if cfg.loss_weights.get(k, 0.0))
    if dest == "no_augment":
        return not cfg.augment
    if dest == "no_fast":
        return not cfg.fast
    return getattr(cfg, dest)


def _resumed_config(flags, typed: set[str], run_dir: Path):
    """The settings recorded in ``run_dir``, with the typed flags that may change on resume applied; a typed flag
    that differs from the recorded value is an error naming both."""
    from dataclasses import replace

    from wrcup.models.checkpoint import read_metadata
    from wrcup.train.config import RESUME_MAY_DIFFER, TrainConfig

    ckpt = run_dir / "last.safetensors"
    if not ckpt.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint to resume in {run_dir} (expected {ckpt})")
    recorded = TrainConfig.from_dict(read_metadata(ckpt)["config"])
    cfg = replace(recorded, out=str(run_dir), device=flags.device, progress=flags.progress)
    for dest in sorted(typed - set(PER_INVOCATION_FLAGS) - {"out"}):
        setting = TRAIN_FLAG_FIELDS.get(dest, dest)
        if setting in RESUME_MAY_DIFFER:
            setattr(cfg, setting, getattr(flags, setting))
        elif _flag_value(dest, flags) != _flag_value(dest, recorded):
            flag = "--" + dest.replace("_", "-")
            raise ValueError(f"--resume: {flag} {_flag_value(dest, flags)} differs from the run's recorded "
                             f"{flag} {_flag_value(dest, recorded)} ({ckpt}); a resumed run keeps its settings, "
                             f"leave {flag} out")
    return cfg


def _run_train(args) -> int:
    from wrcup._checks import resolve_device
    from wrcup.train.config import LOSS_NAMES, TrainConfig
    from wrcup.train.trainer import TrainingInterrupted, train

    typed = _typed_train_flags(args)
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
        keep_every=args.keep_every, ema=args.ema, seed=args.seed, target_seed=args.target_seed,
        device=resolve_device(args.device, "--device"), name=args.name,
        fast=not args.no_fast, precision=args.precision)
    run_dir = None
    if args.resume is not None:
        if args.resume is True and args.out is None:
            raise ValueError("--resume without RUN_DIR needs --out RUN_DIR")
        run_dir = Path(args.out if args.resume is True else args.resume)
        if args.resume is not True and args.out is not None and Path(args.out).resolve() != run_dir.resolve():
            raise ValueError(f"--out {args.out} and --resume {args.resume} name different run folders; give one")
        cfg = _resumed_config(cfg, typed, run_dir)
    elif args.data is None or args.out is None:
        raise ValueError("a new run needs --data and --out (or continue one with --resume RUN_DIR)")
    try:
        summary = train(cfg, resume=run_dir is not None, stop_at=args.stop_at)
    except TrainingInterrupted as stopped:
        if stopped.is_main:  # every rank stops; one line is enough
            print(stopped, file=sys.stderr)
        return stopped.exit_code
    except KeyboardInterrupt:
        print("interrupted before the first training step; this invocation wrote no checkpoint", file=sys.stderr)
        return 130
    print(json.dumps(summary, indent=2))
    return 0


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="list backbones, operators and shipped checkpoints")
    p.set_defaults(func=_run_info)


def _run_info(args) -> int:
    from wrcup import backbones, nn
    from wrcup.models.bundle import SHIPPED_CHECKPOINTS
    from wrcup.models.names import DEFAULT_CHECKPOINT

    print("backbones:   " + ", ".join(backbones.list_backbones()))
    print("operators:   " + ", ".join(nn.list_operators()))
    for name in nn.list_operators():
        print(f"  {name}: {nn.operator_entry(name).summary}")
    print("checkpoints: " + ", ".join(f"{name} (default)" if name == DEFAULT_CHECKPOINT else name
                                      for name in sorted(SHIPPED_CHECKPOINTS)))
    print("cpu:         " + _bfloat16_advice())
    return 0


def _bfloat16_advice() -> str:
    from wrcup.models.fuse import cpu_bfloat16_units

    units = cpu_bfloat16_units()
    if units == "AMX":
        return ("bfloat16 units: AMX. torch.autocast(\"cpu\", dtype=torch.bfloat16) around the model, "
                "`wrcup upsample --precision bfloat16` and `wrcup train --precision bfloat16` run faster here "
                "(measured: docs/BENCHMARKS.md)")
    if units is not None:
        return (f"bfloat16 units: {units} (not measured with wrcup; compare float32 and bfloat16 autocast before "
                "using it)")
    return "bfloat16 units: none found. Keep float32: bfloat16 convolutions are much slower without them"


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
    add_convert_parser(sub)
    add_export_parser(sub)
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
